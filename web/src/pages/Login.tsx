import { useEffect, useState, type FormEvent } from "react";

import { AuthLayout } from "../components/AuthLayout";
import { ErrorNotice, useTitle } from "../components/ui";
import { useAuth } from "../lib/auth";
import { navigate, useLocation } from "../lib/router";

/** Where to go after signing in: an in-app path only (never another site). */
export function safeNext(next: string | null): string {
  if (!next || !next.startsWith("/") || next.startsWith("//") || next.includes("\\")) return "/";
  if (next.startsWith("/login") || next.startsWith("/set-password")) return "/";
  return next;
}

export function LoginPage() {
  useTitle("Sign in");
  const { me, loading, signIn } = useAuth();
  const { search } = useLocation();
  const next = safeNext(search.get("next"));
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    if (!loading && me) navigate(next, { replace: true });
  }, [loading, me, next]);

  async function submit(event: FormEvent) {
    event.preventDefault();
    setBusy(true);
    setError(null);
    try {
      await signIn(email.trim(), password);
      navigate(next, { replace: true });
    } catch (failure) {
      setError(failure);
      setPassword("");
    } finally {
      setBusy(false);
    }
  }

  return (
    <AuthLayout title="Sign in" subtitle="to your Knowledge Foundry workspace">
      <form onSubmit={submit} className="space-y-4" noValidate={false}>
        {error ? <ErrorNotice error={error} /> : null}
        <div>
          <label htmlFor="email" className="label">
            Email
          </label>
          <input
            id="email"
            name="email"
            type="email"
            autoComplete="username"
            required
            autoFocus
            className="input"
            value={email}
            onChange={(e) => setEmail(e.target.value)}
          />
        </div>
        <div>
          <label htmlFor="password" className="label">
            Password
          </label>
          <input
            id="password"
            name="password"
            type="password"
            autoComplete="current-password"
            required
            className="input"
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </div>
        <button type="submit" className="btn-primary w-full py-2" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        <p className="muted text-xs">
          No account yet? Ask an administrator of your workspace for an invitation link.
        </p>
      </form>
    </AuthLayout>
  );
}
