import { useTitle } from "../components/ui";
import { homePath, useAuth } from "../lib/auth";
import { Link } from "../lib/router";

export function NotFoundPage() {
  useTitle("Not found");
  const { me } = useAuth();
  const home = homePath(me?.role);
  return (
    <div className="mx-auto max-w-xl px-6 py-16 text-center">
      <h1 className="page-title">Page not found</h1>
      <p className="muted mt-2">There is nothing at this address, or you may not open it.</p>
      <p className="mt-6">
        <Link to={home} className="link">
          {home === "/" ? "Go to chat" : home === "/admin/audit" ? "Go to the audit trail" : "Go to usage"}
        </Link>
      </p>
    </div>
  );
}
