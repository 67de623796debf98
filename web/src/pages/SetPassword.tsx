import { useState, type FormEvent } from "react";

import { AuthLayout } from "../components/AuthLayout";
import { ErrorNotice, useTitle } from "../components/ui";
import { ApiError } from "../lib/api";
import { useAuth } from "../lib/auth";
import { Link, navigate } from "../lib/router";

function tokenFromHash(): string | null {
  const params = new URLSearchParams(window.location.hash.replace(/^#/, ""));
  return params.get("token");
}

export function SetPasswordPage() {
  useTitle("Set your password");
  const { setPassword } = useAuth();
  // Read the one-time token once, then take it out of the address bar and history.
  const [token] = useState<string | null>(() => {
    const found = tokenFromHash();
    if (found) window.history.replaceState(null, "", window.location.pathname + window.location.search);
    return found;
  });
  const [password, setPasswordValue] = useState("");
  const [repeat, setRepeat] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const mismatch = repeat.length > 0 && password !== repeat;

  async function submit(event: FormEvent) {
    event.preventDefault();
    if (!token) return;
    if (password !== repeat) {
      setError(new Error("The two passwords are not the same."));
      return;
    }
    setBusy(true);
    setError(null);
    try {
      await setPassword(token, password);
      navigate("/", { replace: true });
    } catch (failure) {
      setError(failure);
    } finally {
      setBusy(false);
    }
  }

  const linkDead = error instanceof ApiError && error.code === "invalid_link";

  if (!token) {
    return (
      <AuthLayout title="Set your password">
        <ErrorNotice error={new Error("This link has no token. Open the link from your invitation exactly as it was sent, or ask an administrator for a new one.")} />
        <p className="mt-4 text-sm">
          <Link to="/login" className="link">
            Go to sign in
          </Link>
        </p>
      </AuthLayout>
    );
  }

  return (
    <AuthLayout title="Set your password" subtitle="Choose a password to finish setting up your account.">
      <form onSubmit={submit} className="space-y-4">
        {error ? (
          <ErrorNotice error={error}>
            {linkDead ? <p className="mt-1">Ask an administrator for a new link.</p> : null}
          </ErrorNotice>
        ) : null}
        <div>
          <label htmlFor="new-password" className="label">
            New password
          </label>
          <input
            id="new-password"
            type="password"
            autoComplete="new-password"
            required
            autoFocus
            className="input"
            value={password}
            onChange={(e) => setPasswordValue(e.target.value)}
            aria-describedby="password-hint"
          />
          <p id="password-hint" className="muted mt-1 text-xs">
            Use a long passphrase; the server says if it is too weak.
          </p>
        </div>
        <div>
          <label htmlFor="repeat-password" className="label">
            Repeat the password
          </label>
          <input
            id="repeat-password"
            type="password"
            autoComplete="new-password"
            required
            className="input"
            value={repeat}
            onChange={(e) => setRepeat(e.target.value)}
            aria-invalid={mismatch}
            aria-describedby={mismatch ? "repeat-error" : undefined}
          />
          {mismatch ? (
            <p id="repeat-error" className="mt-1 text-xs text-red-700 dark:text-red-300">
              The passwords are not the same.
            </p>
          ) : null}
        </div>
        <button type="submit" className="btn-primary w-full py-2" disabled={busy || linkDead}>
          {busy ? "Saving…" : "Set password and sign in"}
        </button>
      </form>
    </AuthLayout>
  );
}
