import { Shell } from "./components/Shell";
import { ErrorNotice, Spinner } from "./components/ui";
import { AuthProvider, can, homePath, loginPath, useAuth } from "./lib/auth";
import { match, navigate, useLocation } from "./lib/router";
import { ChatPage } from "./pages/Chat";
import { DocumentsPage } from "./pages/Documents";
import { LoginPage } from "./pages/Login";
import { NotFoundPage } from "./pages/NotFound";
import { SearchPage } from "./pages/Search";
import { SetPasswordPage } from "./pages/SetPassword";
import { Component, Suspense, lazy, useEffect, type ReactNode } from "react";

// Pages few people open are loaded when first opened (the first page's JavaScript stays small).
const AdminPage = lazy(() => import("./pages/Admin").then((m) => ({ default: m.AdminPage })));
const UsagePage = lazy(() => import("./pages/Usage").then((m) => ({ default: m.UsagePage })));
const AuditPage = lazy(() => import("./pages/Audit").then((m) => ({ default: m.AuditPage })));
const DocumentPage = lazy(() => import("./pages/Document").then((m) => ({ default: m.DocumentPage })));

export function App() {
  return (
    <AuthProvider>
      <Routes />
    </AuthProvider>
  );
}

function Routes() {
  const { path } = useLocation();
  const { me, loading, error, reload } = useAuth();
  const publicPage = path === "/login" || path === "/set-password";

  useEffect(() => {
    if (!loading && !me && !error && !publicPage) navigate(loginPath(), { replace: true });
  }, [loading, me, error, publicPage]);

  if (path === "/login") return <LoginPage />;
  if (path === "/set-password") return <SetPasswordPage />;

  if (loading || (!me && !error)) {
    return (
      <div className="flex min-h-screen items-center justify-center">
        <Spinner label="Loading Knowledge Foundry" />
      </div>
    );
  }
  if (!me) {
    return (
      <main className="mx-auto max-w-md p-6">
        <ErrorNotice error={error}>
          <button type="button" className="btn-secondary mt-2" onClick={reload}>
            Try again
          </button>
        </ErrorNotice>
      </main>
    );
  }

  const role = me.role;
  const home = homePath(role);
  let page;
  let full = false;
  const chat = match("/chat/:id", path);
  const doc = match("/documents/:id", path);
  if (path === "/" || path === "/chat" || chat) {
    if (!can(role, "read")) return <Redirect to={home} />;
    page = <ChatPage key="chat" conversationId={chat?.id ?? null} />;
    full = true;
  } else if (path === "/documents") {
    page = can(role, "read") ? <DocumentsPage /> : <NotFoundPage />;
  } else if (doc) {
    page = can(role, "read") ? <DocumentPage key={doc.id} id={doc.id ?? ""} /> : <NotFoundPage />;
  } else if (path === "/search") {
    page = can(role, "read") ? <SearchPage /> : <NotFoundPage />;
  } else if (path === "/admin/usage") {
    page = can(role, "usage") ? <UsagePage /> : <NotFoundPage />;
  } else if (path === "/admin/audit") {
    page = can(role, "audit") ? <AuditPage /> : <NotFoundPage />;
  } else if (path === "/admin" || path.startsWith("/admin/")) {
    page = can(role, "admin") ? <AdminPage path={path} /> : <NotFoundPage />;
  } else {
    page = <NotFoundPage />;
  }
  return (
    <Shell fullHeight={full}>
      <PageBoundary path={path}>
        <Suspense
          fallback={
            <div className="py-16 text-center">
              <Spinner label="Loading page" />
            </div>
          }
        >
          {page}
        </Suspense>
      </PageBoundary>
    </Shell>
  );
}

function Redirect({ to }: { to: string }) {
  useEffect(() => navigate(to, { replace: true }), [to]);
  return null;
}

/** A page that fails to load or render (a new deployment replaced its file): say so. */
class PageBoundary extends Component<{ path: string; children: ReactNode }, { failed: boolean }> {
  override state = { failed: false };

  static getDerivedStateFromError(): { failed: boolean } {
    return { failed: true };
  }

  override componentDidUpdate(previous: { path: string }) {
    if (previous.path !== this.props.path && this.state.failed) this.setState({ failed: false });
  }

  override render() {
    if (!this.state.failed) return this.props.children;
    return (
      <div className="mx-auto max-w-md p-6">
        <ErrorNotice error={new Error("This page could not be loaded. The app may have been updated.")}>
          <button type="button" className="btn-secondary mt-2" onClick={() => window.location.reload()}>
            Reload
          </button>
        </ErrorNotice>
      </div>
    );
  }
}
