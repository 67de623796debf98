// Who is signed in: GET /v1/auth/me on start; sign in, set password and sign out.

import { createContext, useCallback, useContext, useEffect, useMemo, useState, type ReactNode } from "react";

import { ApiError, api, onUnauthorized, rememberCsrf } from "./api";
import { navigate } from "./router";
import type { Me, Role, SessionOut } from "./types";

interface AuthState {
  me: Me | null;
  loading: boolean;
  error: unknown;
  signIn: (email: string, password: string) => Promise<void>;
  setPassword: (token: string, password: string) => Promise<void>;
  signOut: () => Promise<void>;
  reload: () => void;
}

const AuthContext = createContext<AuthState | null>(null);

function fromSession(session: SessionOut): Me {
  rememberCsrf(session.csrf_token);
  return { kind: "user", ...session.user };
}

export function currentAppPath(): string {
  const { pathname, search } = window.location;
  const path = pathname.startsWith("/ui") ? pathname.slice(3) || "/" : "/";
  return path + search;
}

export function loginPath(): string {
  const next = currentAppPath();
  if (next === "/" || next.startsWith("/login") || next.startsWith("/set-password")) return "/login";
  return `/login?next=${encodeURIComponent(next)}`;
}

export function AuthProvider({ children }: { children: ReactNode }) {
  const [me, setMe] = useState<Me | null>(null);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<unknown>(null);
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    let live = true;
    setLoading(true);
    api
      .get<Me>("/v1/auth/me")
      .then((who) => {
        if (live) {
          setMe(who);
          setError(null);
        }
      })
      .catch((failure: unknown) => {
        if (!live) return;
        setMe(null);
        setError(failure instanceof ApiError && failure.status === 401 ? null : failure);
      })
      .finally(() => {
        if (live) setLoading(false);
      });
    return () => {
      live = false;
    };
  }, [attempt]);

  useEffect(() => {
    onUnauthorized(() => {
      setMe(null);
      navigate(loginPath(), { replace: true });
    });
    return () => onUnauthorized(null);
  }, []);

  const signIn = useCallback(async (email: string, password: string) => {
    const session = await api.post<SessionOut>("/v1/auth/login", { email, password });
    setMe(fromSession(session));
    setError(null);
  }, []);

  const setPassword = useCallback(async (token: string, password: string) => {
    const session = await api.post<SessionOut>("/v1/auth/password", { token, password });
    setMe(fromSession(session));
    setError(null);
  }, []);

  const signOut = useCallback(async () => {
    try {
      await api.post<void>("/v1/auth/logout");
    } finally {
      rememberCsrf(null);
      setMe(null);
      navigate("/login", { replace: true });
    }
  }, []);

  const value = useMemo<AuthState>(
    () => ({
      me,
      loading,
      error,
      signIn,
      setPassword,
      signOut,
      reload: () => setAttempt((n) => n + 1),
    }),
    [me, loading, error, signIn, setPassword, signOut],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthState {
  const state = useContext(AuthContext);
  if (!state) throw new Error("useAuth outside AuthProvider");
  return state;
}

/**
 * What a role may do in the UI (the API enforces it either way):
 * read/edit/admin documents and chat; `audit`: the audit trail (auditors, admins);
 * `usage`: usage figures (everyone but auditors; viewers and editors see their own);
 * `usage_tenant`: the whole tenant's usage and its budgets (analysts, admins).
 */
export type Action = "read" | "edit" | "admin" | "audit" | "usage" | "usage_tenant";

export function can(role: Role | undefined, action: Action): boolean {
  if (!role) return false;
  switch (action) {
    case "admin":
      return role === "admin";
    case "edit":
      return role === "admin" || role === "editor";
    case "read":
      return role === "admin" || role === "editor" || role === "viewer";
    case "audit":
      return role === "admin" || role === "auditor";
    case "usage":
      return role !== "auditor";
    case "usage_tenant":
      return role === "admin" || role === "analyst";
  }
}

/** Where a role starts: chat for those who may read documents, else its one page. */
export function homePath(role: Role | undefined): string {
  if (role === "auditor") return "/admin/audit";
  if (role === "analyst") return "/admin/usage";
  return "/";
}
