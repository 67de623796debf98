import { useCallback, useEffect, useMemo, useState, type FormEvent, type ReactNode } from "react";

import { ConfirmDialog, CopyButton, EmptyState, ErrorNotice, Spinner, StatusBadge, TableHead, TableScroll, useTitle } from "../components/ui";
import { ApiError, api } from "../lib/api";
import { useAuth } from "../lib/auth";
import { formatDate, formatRelative } from "../lib/format";
import { forgetActorNames, useInterval } from "../lib/hooks";
import { Link } from "../lib/router";
import type {
  Changed,
  DocumentList,
  DocumentOut,
  DocumentStatus,
  SettingValue,
  SettingsOut,
  WorkersOut,
  Invited,
  IssuedKey,
  KeyList,
  KeyOut,
  ProjectionsOut,
  Role,
  UserList,
  UserOut,
} from "../lib/types";

const ROLES: Role[] = ["viewer", "editor", "admin", "auditor", "analyst"];
const TABS = [
  { to: "/admin/users", label: "Users" },
  { to: "/admin/keys", label: "API keys" },
  { to: "/admin/status", label: "System status" },
  { to: "/admin/settings", label: "Settings" },
];

export function AdminPage({ path }: { path: string }) {
  const section = path === "/admin" ? "/admin/users" : path;
  let body: ReactNode;
  if (section === "/admin/users") body = <UsersSection />;
  else if (section === "/admin/keys") body = <KeysSection />;
  else if (section === "/admin/status") body = <StatusSection />;
  else if (section === "/admin/settings") body = <SettingsSection />;
  else body = <p className="muted">There is no such admin page.</p>;
  return (
    <div className="mx-auto max-w-6xl px-4 py-6 sm:px-6 lg:py-8">
      <h1 className="page-title">Admin</h1>
      <nav aria-label="Admin sections" className="mt-4 border-b border-zinc-200 dark:border-zinc-800">
        <ul className="-mb-px flex gap-4 overflow-x-auto">
          {TABS.map((tab) => {
            const active = tab.to === section;
            return (
              <li key={tab.to}>
                <Link
                  to={tab.to}
                  aria-current={active ? "page" : undefined}
                  className={`inline-block whitespace-nowrap border-b-2 px-1 pb-2 text-sm font-medium ${
                    active
                      ? "border-indigo-600 text-zinc-900 dark:border-indigo-400 dark:text-zinc-50"
                      : "border-transparent text-zinc-600 hover:text-zinc-900 dark:text-zinc-400 dark:hover:text-zinc-100"
                  }`}
                >
                  {tab.label}
                </Link>
              </li>
            );
          })}
        </ul>
      </nav>
      <div className="mt-6">{body}</div>
    </div>
  );
}

/** Load a list; `reload(position)` waits until the read model has the caller's own write. */
function useLoad<T>(path: string, query?: Record<string, string | number | boolean>) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(true);
  const key = JSON.stringify(query ?? {});
  const reload = useCallback(async (minPosition?: number) => {
    try {
      const params = JSON.parse(key) as Record<string, string | number>;
      if (minPosition !== undefined) params.min_position = minPosition;
      setData(await api.get<T>(path, params));
      setError(null);
    } catch (failure) {
      setError(failure);
    } finally {
      setLoading(false);
    }
  }, [path, key]);
  useEffect(() => {
    void reload();
  }, [reload]);
  return { data, error, loading, reload };
}

function RoleSelect({
  id,
  value,
  onChange,
  disabled,
  label,
}: {
  id: string;
  value: Role;
  onChange: (role: Role) => void;
  disabled?: boolean;
  label: string;
}) {
  return (
    <>
      <label htmlFor={id} className="sr-only">
        {label}
      </label>
      <select
        id={id}
        className="input w-auto py-1 pr-8"
        value={value}
        disabled={disabled}
        onChange={(e) => onChange(e.target.value as Role)}
      >
        {ROLES.map((r) => (
          <option key={r} value={r}>
            {r}
          </option>
        ))}
      </select>
    </>
  );
}

function OneTimeLink({ title, link, expires, emailed }: { title: string; link: string; expires: string; emailed?: boolean }) {
  return (
    <div
      role="status"
      className="rounded-lg border border-emerald-200 bg-emerald-50 p-4 text-sm text-emerald-900 dark:border-emerald-900/60 dark:bg-emerald-950/40 dark:text-emerald-100"
    >
      <p className="font-medium">{title}</p>
      <p className="mt-1">
        {emailed ? "It was e-mailed. " : "It was not e-mailed: send it yourself. "}
        It works once, until {formatDate(expires)}.
      </p>
      <div className="mt-3 flex flex-col gap-2 sm:flex-row sm:items-center">
        <code className="block min-w-0 flex-1 truncate rounded bg-white px-2 py-1.5 font-mono text-xs text-zinc-900 dark:bg-zinc-900 dark:text-zinc-100">
          {link}
        </code>
        <CopyButton text={link} label="Copy link" />
      </div>
    </div>
  );
}

function UsersSection() {
  useTitle("Users");
  const { me } = useAuth();
  const { data, error, loading, reload } = useLoad<UserList>("/v1/users");
  const [email, setEmail] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [inviting, setInviting] = useState(false);
  const [inviteError, setInviteError] = useState<unknown>(null);
  const [link, setLink] = useState<{ title: string; link: string; expires: string; emailed?: boolean } | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [busyId, setBusyId] = useState<string | null>(null);
  const [toDisable, setToDisable] = useState<UserOut | null>(null);

  async function invite(event: FormEvent) {
    event.preventDefault();
    setInviting(true);
    setInviteError(null);
    try {
      const invited = await api.post<Invited>("/v1/users", { email: email.trim(), role });
      forgetActorNames();
      setLink({
        title: `Invitation link for ${invited.email}`,
        link: invited.link,
        expires: invited.link_expires_at,
        emailed: invited.emailed,
      });
      setEmail("");
      await reload(invited.position);
    } catch (failure) {
      setInviteError(failure);
    } finally {
      setInviting(false);
    }
  }

  async function act(user: UserOut, run: () => Promise<{ position?: number } | undefined>) {
    setBusyId(user.id);
    setActionError(null);
    try {
      const done = await run();
      await reload(done?.position);
    } catch (failure) {
      setActionError(failure);
    } finally {
      setBusyId(null);
    }
  }

  const base = (id: string) => `/v1/users/${encodeURIComponent(id)}`;

  return (
    <div className="space-y-6">
      <section aria-labelledby="invite-heading" className="card p-4 sm:p-5">
        <h2 id="invite-heading" className="text-base font-semibold">
          Invite someone
        </h2>
        <form onSubmit={invite} className="mt-3 flex flex-col gap-3 sm:flex-row sm:items-end">
          <div className="flex-1">
            <label htmlFor="invite-email" className="label">
              Email
            </label>
            <input
              id="invite-email"
              type="email"
              required
              className="input"
              value={email}
              onChange={(e) => setEmail(e.target.value)}
            />
          </div>
          <div>
            <label htmlFor="invite-role" className="label">
              Role
            </label>
            <select id="invite-role" className="input sm:w-36" value={role} onChange={(e) => setRole(e.target.value as Role)}>
              {ROLES.map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
          </div>
          <button type="submit" className="btn-primary" disabled={inviting || !email.trim()}>
            {inviting ? "Inviting…" : "Send invitation"}
          </button>
        </form>
        {inviteError ? (
          <div className="mt-3">
            <ErrorNotice error={inviteError} />
          </div>
        ) : null}
        {link ? (
          <div className="mt-4">
            <OneTimeLink {...link} />
          </div>
        ) : null}
      </section>

      <section aria-labelledby="users-heading">
        <h2 id="users-heading" className="text-base font-semibold">
          Users
        </h2>
        <div className="mt-3 space-y-3">
          {error ? <ErrorNotice error={error} /> : null}
          {actionError ? <ErrorNotice error={actionError} /> : null}
          {loading ? (
            <Spinner label="Loading users" />
          ) : !data || data.users.length === 0 ? (
            <EmptyState title="No users yet" />
          ) : (
            <TableScroll label="Users table" className="card">
              <table className="w-full text-sm">
                <TableHead
                  columns={[
                    { label: "Email" },
                    { label: "Role" },
                    { label: "Status" },
                    { label: "Last sign-in", className: "hidden md:table-cell" },
                    { label: "Actions", className: "text-right", srOnly: true },
                  ]}
                />
                <tbody className="divide-y divide-zinc-200 dark:divide-zinc-800">
                  {data.users.map((user) => {
                    const self = user.id === me?.id;
                    const busy = busyId === user.id;
                    return (
                      <tr key={user.id}>
                        <td className="table-cell break-words font-medium">
                          {user.email}
                          {self ? <span className="muted font-normal"> (you)</span> : null}
                        </td>
                        <td className="table-cell">
                          <RoleSelect
                            id={`role-${user.id}`}
                            label={`Role of ${user.email}`}
                            value={user.role}
                            disabled={busy || self}
                            onChange={(next) => void act(user, () => api.patch<Changed>(base(user.id), { role: next }))}
                          />
                        </td>
                        <td className="table-cell">
                          <UserStatusBadge status={user.status} />
                        </td>
                        <td className="table-cell muted hidden whitespace-nowrap md:table-cell">
                          {formatDate(user.last_sign_in_at)}
                        </td>
                        <td className="table-cell whitespace-nowrap text-right">
                          <div className="flex justify-end gap-1">
                            {user.status !== "active" ? (
                              <button
                                type="button"
                                className="btn-ghost text-xs"
                                disabled={busy}
                                onClick={() =>
                                  void act(user, async () => {
                                    const fresh = await api.post<Invited>(`${base(user.id)}/link`);
                                    setLink({
                                      title: `New sign-in link for ${user.email}`,
                                      link: fresh.link,
                                      expires: fresh.link_expires_at,
                                      emailed: fresh.emailed,
                                    });
                                    return fresh;
                                  })
                                }
                              >
                                New link<span className="sr-only"> for {user.email}</span>
                              </button>
                            ) : null}
                            {user.status === "disabled" ? (
                              <button
                                type="button"
                                className="btn-ghost text-xs"
                                disabled={busy}
                                onClick={() => void act(user, () => api.post<Changed>(`${base(user.id)}/enable`))}
                              >
                                Enable<span className="sr-only"> {user.email}</span>
                              </button>
                            ) : (
                              <button
                                type="button"
                                className="btn-ghost text-xs text-red-700 dark:text-red-300"
                                disabled={busy || self}
                                onClick={() => setToDisable(user)}
                              >
                                Disable<span className="sr-only"> {user.email}</span>
                              </button>
                            )}
                          </div>
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </TableScroll>
          )}
        </div>
      </section>

      <ConfirmDialog
        open={toDisable !== null}
        title="Disable user?"
        confirmLabel="Disable"
        busy={toDisable !== null && busyId === toDisable.id}
        onConfirm={() => {
          const user = toDisable;
          if (!user) return;
          void act(user, () => api.post<Changed>(`${base(user.id)}/disable`)).then(() =>
            setToDisable(null),
          );
        }}
        onCancel={() => setToDisable(null)}
      >
        <p>
          {toDisable?.email} will be signed out and can no longer sign in until enabled again.
        </p>
      </ConfirmDialog>
    </div>
  );
}

function UserStatusBadge({ status }: { status: UserOut["status"] }) {
  const style =
    status === "active"
      ? "bg-emerald-50 text-emerald-800 ring-emerald-200 dark:bg-emerald-950/50 dark:text-emerald-200 dark:ring-emerald-900"
      : status === "invited"
        ? "bg-sky-50 text-sky-800 ring-sky-200 dark:bg-sky-950/50 dark:text-sky-200 dark:ring-sky-900"
        : "bg-zinc-100 text-zinc-700 ring-zinc-200 dark:bg-zinc-800 dark:text-zinc-300 dark:ring-zinc-700";
  return <span className={`rounded-full px-2 py-0.5 text-xs font-medium ring-1 ring-inset ${style}`}>{status}</span>;
}

function KeysSection() {
  useTitle("API keys");
  const { data, error, loading, reload } = useLoad<KeyList>("/v1/keys", { limit: 200 });
  const [name, setName] = useState("");
  const [role, setRole] = useState<Role>("viewer");
  const [expires, setExpires] = useState("");
  const [issuing, setIssuing] = useState(false);
  const [issueError, setIssueError] = useState<unknown>(null);
  const [issued, setIssued] = useState<IssuedKey | null>(null);
  const [toRevoke, setToRevoke] = useState<KeyOut | null>(null);
  const [revoking, setRevoking] = useState(false);
  const [revokeError, setRevokeError] = useState<unknown>(null);

  // GET /v1/keys items carry last_used_at on servers that record it (null: never used).
  const showLastUsed = data?.items.some((key) => "last_used_at" in key) ?? false;

  async function issue(event: FormEvent) {
    event.preventDefault();
    setIssuing(true);
    setIssueError(null);
    try {
      const body: Record<string, unknown> = { name: name.trim(), role };
      if (expires) body.expires_at = new Date(`${expires}T23:59:59`).toISOString();
      const key = await api.post<IssuedKey>("/v1/keys", body);
      forgetActorNames();
      setIssued(key);
      setName("");
      setExpires("");
      await reload(key.position);
    } catch (failure) {
      setIssueError(failure);
    } finally {
      setIssuing(false);
    }
  }

  async function revoke() {
    if (!toRevoke) return;
    setRevoking(true);
    setRevokeError(null);
    try {
      const revoked = await api.del<Changed>(`/v1/keys/${encodeURIComponent(toRevoke.id)}`);
      setToRevoke(null);
      await reload(revoked.position);
    } catch (failure) {
      setRevokeError(failure);
    } finally {
      setRevoking(false);
    }
  }

  return (
    <div className="space-y-6">
      <section aria-labelledby="issue-heading" className="card p-4 sm:p-5">
        <h2 id="issue-heading" className="text-base font-semibold">
          Issue a key
        </h2>
        <form onSubmit={issue} className="mt-3 flex flex-col gap-3 sm:flex-row sm:items-end">
          <div className="flex-1">
            <label htmlFor="key-name" className="label">
              Name
            </label>
            <input id="key-name" required maxLength={100} className="input" value={name} onChange={(e) => setName(e.target.value)} />
          </div>
          <div>
            <label htmlFor="key-role" className="label">
              Role
            </label>
            <select id="key-role" className="input sm:w-36" value={role} onChange={(e) => setRole(e.target.value as Role)}>
              {ROLES.map((r) => (
                <option key={r} value={r}>
                  {r}
                </option>
              ))}
            </select>
          </div>
          <div>
            <label htmlFor="key-expires" className="label">
              Expires <span className="muted font-normal">(optional)</span>
            </label>
            <input id="key-expires" type="date" className="input sm:w-44" value={expires} onChange={(e) => setExpires(e.target.value)} />
          </div>
          <button type="submit" className="btn-primary" disabled={issuing || !name.trim()}>
            {issuing ? "Issuing…" : "Issue key"}
          </button>
        </form>
        {issueError ? (
          <div className="mt-3">
            <ErrorNotice error={issueError} />
          </div>
        ) : null}
        {issued ? (
          <div
            role="status"
            className="mt-4 rounded-lg border border-amber-200 bg-amber-50 p-4 text-sm text-amber-900 dark:border-amber-900/60 dark:bg-amber-950/40 dark:text-amber-100"
          >
            <p className="font-medium">Key “{issued.name}” issued. Copy it now: it is not shown again.</p>
            <div className="mt-3 flex flex-col gap-2 sm:flex-row sm:items-center">
              <code className="block min-w-0 flex-1 truncate rounded bg-white px-2 py-1.5 font-mono text-xs text-zinc-900 dark:bg-zinc-900 dark:text-zinc-100">
                {issued.key}
              </code>
              <CopyButton text={issued.key} label="Copy key" />
            </div>
          </div>
        ) : null}
      </section>

      <section aria-labelledby="keys-heading">
        <h2 id="keys-heading" className="text-base font-semibold">
          Keys
        </h2>
        <div className="mt-3 space-y-3">
          {error ? <ErrorNotice error={error} /> : null}
          {loading ? (
            <Spinner label="Loading keys" />
          ) : !data || data.items.length === 0 ? (
            <EmptyState title="No keys" />
          ) : (
            <TableScroll label="API keys table" className="card">
              <table className="w-full text-sm">
                <TableHead
                  columns={[
                    { label: "Name" },
                    { label: "Role" },
                    { label: "Issued", className: "hidden sm:table-cell" },
                    { label: "Expires", className: "hidden md:table-cell" },
                    showLastUsed && { label: "Last used", className: "hidden sm:table-cell" },
                    { label: "State" },
                    { label: "Actions", className: "text-right", srOnly: true },
                  ]}
                />
                <tbody className="divide-y divide-zinc-200 dark:divide-zinc-800">
                  {data.items.map((key) => {
                    const expired = key.expires_at !== null && new Date(key.expires_at).getTime() < Date.now();
                    const state = key.revoked_at ? "revoked" : expired ? "expired" : "active";
                    return (
                      <tr key={key.id}>
                        <td className="table-cell font-medium">{key.name}</td>
                        <td className="table-cell">{key.role}</td>
                        <td className="table-cell muted hidden whitespace-nowrap sm:table-cell">{formatDate(key.issued_at)}</td>
                        <td className="table-cell muted hidden whitespace-nowrap md:table-cell">
                          {key.expires_at ? formatDate(key.expires_at) : "never"}
                        </td>
                        {showLastUsed ? (
                          <td className="table-cell muted hidden whitespace-nowrap sm:table-cell">
                            {key.last_used_at ? (
                              <time dateTime={key.last_used_at} title={formatDate(key.last_used_at)}>
                                {formatRelative(key.last_used_at)}
                              </time>
                            ) : (
                              "never"
                            )}
                          </td>
                        ) : null}
                        <td className="table-cell">
                          <span className={state === "active" ? "text-emerald-700 dark:text-emerald-300" : "muted"}>{state}</span>
                        </td>
                        <td className="table-cell text-right">
                          {state !== "revoked" ? (
                            <button
                              type="button"
                              className="btn-ghost text-xs text-red-700 dark:text-red-300"
                              onClick={() => {
                                setRevokeError(null);
                                setToRevoke(key);
                              }}
                            >
                              Revoke<span className="sr-only"> {key.name}</span>
                            </button>
                          ) : null}
                        </td>
                      </tr>
                    );
                  })}
                </tbody>
              </table>
            </TableScroll>
          )}
        </div>
      </section>

      <ConfirmDialog
        open={toRevoke !== null}
        title="Revoke key?"
        confirmLabel="Revoke"
        busy={revoking}
        error={revokeError}
        onConfirm={() => void revoke()}
        onCancel={() => setToRevoke(null)}
      >
        <p>The very next request made with “{toRevoke?.name}” is refused. This cannot be undone.</p>
      </ConfirmDialog>
    </div>
  );
}

const PROCESSING: DocumentStatus[] = ["uploaded", "parsed", "chunked"];
const STATUS_MS = 5000;

interface Pipeline {
  processing: DocumentOut[];
  more: boolean;
  failed: DocumentOut[];
  failedMore: boolean;
}

/** Documents not yet final (uploaded, parsed, chunked) and the most recent failures. */
async function loadPipeline(): Promise<Pipeline> {
  const [failed, ...stages] = await Promise.all([
    api.get<DocumentList>("/v1/documents", { status: "failed", limit: 50 }),
    ...PROCESSING.map((status) => api.get<DocumentList>("/v1/documents", { status, limit: 200 })),
  ]);
  const processing = stages.flatMap((page) => page.items);
  processing.sort((a, b) => b.uploaded_at.localeCompare(a.uploaded_at));
  const failures = [...(failed?.items ?? [])].sort((a, b) => b.updated_at.localeCompare(a.updated_at));
  return {
    processing,
    more: stages.some((page) => page.next_cursor !== null),
    failed: failures,
    failedMore: failed?.next_cursor !== null,
  };
}

function StatusSection() {
  useTitle("System status");
  const lag = useLoad<ProjectionsOut>("/v1/projections");
  const workers = useLoad<WorkersOut>("/v1/admin/workers");
  const reloadWorkers = workers.reload;
  const [pipeline, setPipeline] = useState<Pipeline | null>(null);
  const [pipelineError, setPipelineError] = useState<unknown>(null);
  const [updated, setUpdated] = useState<Date | null>(null);
  const reloadLag = lag.reload;

  const refresh = useCallback(async () => {
    const [, , found] = await Promise.allSettled([reloadLag(), reloadWorkers(), loadPipeline()]);
    if (found.status === "fulfilled") {
      setPipeline(found.value);
      setPipelineError(null);
    } else {
      setPipelineError(found.reason);
    }
    setUpdated(new Date());
  }, [reloadLag, reloadWorkers]);

  useEffect(() => {
    void refresh();
  }, [refresh]);
  useInterval(() => void refresh(), STATUS_MS);

  const components = lag.data?.components ?? [];
  const behind = components.filter((c) => c.lag > 0);
  const maxLag = Math.max(0, ...components.map((c) => c.lag));

  return (
    <div className="space-y-8">
      <div className="flex flex-wrap items-center justify-between gap-2">
        <p className="muted text-xs">
          Refreshes every 5 s{updated ? ` · updated ${updated.toLocaleTimeString()}` : ""}
        </p>
        <button type="button" className="btn-ghost text-xs" onClick={() => void refresh()}>
          Refresh now
        </button>
      </div>

      <dl className="grid grid-cols-2 gap-3 lg:grid-cols-4">
        <div className="card p-4">
          <dt className="muted text-xs font-medium uppercase tracking-wide">Workers</dt>
          <dd className="mt-1 text-lg font-semibold">
            {workers.data ? (
              workers.data.listening ? (
                <span className="text-emerald-700 dark:text-emerald-300">Listening</span>
              ) : (
                <span className="text-red-700 dark:text-red-300">Not listening</span>
              )
            ) : (
              "—"
            )}
          </dd>
          <dd className="muted text-xs">
            {workers.data
              ? workers.data.listening
                ? "every stage has a worker"
                : "a stage has no worker waiting for work"
              : "state unknown"}
          </dd>
        </div>
        <div className="card p-4">
          <dt className="muted text-xs font-medium uppercase tracking-wide">Read models</dt>
          <dd className="mt-1 text-lg font-semibold">
            {lag.data ? (
              behind.length === 0 ? (
                <span className="text-emerald-700 dark:text-emerald-300">All caught up</span>
              ) : (
                <span className="text-amber-800 dark:text-amber-200">
                  {behind.length} behind
                </span>
              )
            ) : (
              "—"
            )}
          </dd>
          {behind.length ? <dd className="muted text-xs">at most {maxLag.toLocaleString()} events behind</dd> : null}
        </div>
        <div className="card p-4">
          <dt className="muted text-xs font-medium uppercase tracking-wide">Documents processing</dt>
          <dd className="mt-1 text-lg font-semibold tabular-nums">
            {pipeline ? `${pipeline.processing.length.toLocaleString()}${pipeline.more ? "+" : ""}` : "—"}
          </dd>
          <dd className="muted text-xs">uploaded, parsed or chunked, not yet embedded</dd>
        </div>
        <div className="card p-4">
          <dt className="muted text-xs font-medium uppercase tracking-wide">Failed documents</dt>
          <dd
            className={`mt-1 text-lg font-semibold tabular-nums ${
              pipeline?.failed.length ? "text-red-700 dark:text-red-300" : ""
            }`}
          >
            {pipeline ? `${pipeline.failed.length.toLocaleString()}${pipeline.failedMore ? "+" : ""}` : "—"}
          </dd>
          <dd className="muted text-xs">whose processing failed</dd>
        </div>
      </dl>

      {pipelineError ? <ErrorNotice error={pipelineError} /> : null}

      <section aria-labelledby="processing-heading">
        <h2 id="processing-heading" className="text-base font-semibold">
          Still processing
        </h2>
        <div className="mt-3">
          {!pipeline ? (
            <Spinner label="Loading documents" />
          ) : pipeline.processing.length === 0 ? (
            <p className="muted text-sm">Nothing is being processed.</p>
          ) : (
            <ul className="card divide-y divide-zinc-200 dark:divide-zinc-800">
              {pipeline.processing.slice(0, 20).map((doc) => (
                <li key={doc.id} className="flex flex-wrap items-center justify-between gap-2 px-4 py-2.5">
                  <Link to={`/documents/${doc.id}`} className="link min-w-0 break-all">
                    {doc.filename}
                  </Link>
                  <span className="flex items-center gap-2">
                    <StatusBadge status={doc.status} />
                    <span className="muted text-xs">uploaded {formatRelative(doc.uploaded_at)}</span>
                  </span>
                </li>
              ))}
            </ul>
          )}
          {pipeline && pipeline.processing.length > 20 ? (
            <p className="muted mt-2 text-xs">and {(pipeline.processing.length - 20).toLocaleString()} more.</p>
          ) : null}
        </div>
      </section>

      <section aria-labelledby="failures-heading">
        <h2 id="failures-heading" className="text-base font-semibold">
          Recent ingestion failures
        </h2>
        <div className="mt-3">
          {!pipeline ? (
            <Spinner label="Loading failures" />
          ) : pipeline.failed.length === 0 ? (
            <p className="muted text-sm">No document failed.</p>
          ) : (
            <ul className="card divide-y divide-zinc-200 dark:divide-zinc-800">
              {pipeline.failed.slice(0, 10).map((doc) => (
                <li key={doc.id} className="px-4 py-3">
                  <div className="flex flex-wrap items-baseline justify-between gap-x-3 gap-y-1">
                    <Link to={`/documents/${doc.id}`} className="link min-w-0 break-all">
                      {doc.filename}
                    </Link>
                    <time dateTime={doc.updated_at} className="muted text-xs" title={formatDate(doc.updated_at)}>
                      {formatRelative(doc.updated_at)}
                    </time>
                  </div>
                  {doc.failure ? (
                    <p className="mt-1 break-words text-sm text-red-700 dark:text-red-300">
                      {doc.failure.stage}: {doc.failure.reason || doc.failure.code}
                    </p>
                  ) : null}
                </li>
              ))}
            </ul>
          )}
          {pipeline && pipeline.failed.length > 10 ? (
            <p className="mt-2 text-sm">
              <Link to="/documents" className="link">
                All failed documents are in Documents (filter: Failed)
              </Link>
            </p>
          ) : null}
        </div>
      </section>

      <WorkersTable workers={workers.data} error={workers.error} loading={workers.loading} />

      <section aria-labelledby="status-heading">
        <h2 id="status-heading" className="text-base font-semibold">
          Relays and read models
        </h2>
        <div className="mt-3 space-y-3">
          {lag.error ? <ErrorNotice error={lag.error} /> : null}
          {lag.loading ? (
            <Spinner label="Loading status" />
          ) : !lag.data || components.length === 0 ? (
            <EmptyState title="Nothing to report" />
          ) : (
            <TableScroll label="Relay and read model lag" className="card">
              <table className="w-full text-sm">
                <caption className="sr-only">Relay and read model positions and lag</caption>
                <TableHead
                  columns={[
                    { label: "Component" },
                    { label: "Kind" },
                    { label: "Positions" },
                    { label: "Lag", className: "text-right" },
                  ]}
                />
                <tbody className="divide-y divide-zinc-200 dark:divide-zinc-800">
                  {components.map((c) => (
                    <tr key={`${c.kind}:${c.name}`}>
                      <th scope="row" className="table-cell text-left font-medium">{c.name}</th>
                      <td className="table-cell muted">{c.kind}</td>
                      <td className="table-cell muted text-xs tabular-nums">
                        {c.contexts.map((ctx) => (
                          <span key={ctx.context} className="block">
                            {ctx.context}: {ctx.position.toLocaleString()} / {ctx.head.toLocaleString()}
                          </span>
                        ))}
                      </td>
                      <td className="table-cell text-right tabular-nums">
                        <span className={c.lag === 0 ? "text-emerald-700 dark:text-emerald-300" : "text-amber-800 dark:text-amber-200"}>
                          {c.lag.toLocaleString()}
                        </span>
                      </td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </TableScroll>
          )}
        </div>
      </section>

    </div>
  );
}

function WorkersTable({ workers, error, loading }: { workers: WorkersOut | null; error: unknown; loading: boolean }) {
  const missing = error instanceof ApiError && error.status === 404;
  return (
    <section aria-labelledby="workers-heading">
      <h2 id="workers-heading" className="text-base font-semibold">
        Processing workers
      </h2>
      <p className="muted mt-1 text-sm">
        Each stage's queue{workers ? ` on the ${workers.stream} stream` : ""}: work waiting, in progress, delivered again, and
        workers listening for work.
      </p>
      <div className="mt-3 space-y-3">
        {missing ? (
          <p className="muted text-sm">This server does not report its workers (GET /v1/admin/workers is missing).</p>
        ) : error ? (
          <ErrorNotice error={error} />
        ) : null}
        {loading && !workers ? (
          <Spinner label="Loading workers" />
        ) : workers && workers.consumers.length ? (
          <TableScroll label="Workers per stage" className="card">
            <table className="w-full text-sm">
              <caption className="sr-only">Processing stages and their workers</caption>
              <TableHead
                columns={[
                  { label: "Stage" },
                  { label: "Listening", className: "text-right" },
                  { label: "Waiting", className: "text-right" },
                  { label: "In progress", className: "text-right" },
                  { label: "Redelivered", className: "text-right" },
                  { label: "Last active" },
                ]}
              />
              <tbody className="divide-y divide-zinc-200 tabular-nums dark:divide-zinc-800">
                {workers.consumers.map((c) => {
                  const idle = c.waiting_pulls === 0;
                  return (
                    <tr key={c.name}>
                      <th scope="row" className="table-cell whitespace-nowrap text-left font-medium">
                        {c.name.replace(/^worker-/, "")}
                        {!c.exists ? <span className="muted block text-xs font-normal">not started yet</span> : null}
                      </th>
                      <td className="table-cell text-right">
                        <span
                          className={
                            idle && (c.pending > 0 || !c.name.endsWith("-restored"))
                              ? "text-red-700 dark:text-red-300"
                              : "text-emerald-700 dark:text-emerald-300"
                          }
                        >
                          {c.waiting_pulls.toLocaleString()}
                        </span>
                      </td>
                      <td className="table-cell text-right">{c.pending.toLocaleString()}</td>
                      <td className="table-cell text-right">{c.ack_pending.toLocaleString()}</td>
                      <td className="table-cell text-right">{c.redelivered.toLocaleString()}</td>
                      <td className="table-cell muted whitespace-nowrap">
                        {c.last_active ? (
                          <time dateTime={c.last_active} title={formatDate(c.last_active)}>
                            {formatRelative(c.last_active)}
                          </time>
                        ) : (
                          "—"
                        )}
                      </td>
                    </tr>
                  );
                })}
              </tbody>
            </table>
          </TableScroll>
        ) : null}
      </div>
    </section>
  );
}

// ------------------------------------------------------------------ settings

function SettingsSection() {
  useTitle("Settings");
  const { data, error, loading } = useLoad<SettingsOut>("/v1/admin/settings");
  const sections = useMemo(() => {
    if (!data?.settings) return [];
    const general: [string, SettingValue][] = [];
    const grouped: [string, Record<string, SettingValue>][] = [];
    for (const [name, value] of Object.entries(data.settings)) {
      if (value !== null && typeof value === "object" && !Array.isArray(value)) grouped.push([name, value]);
      else general.push([name, value]);
    }
    return general.length ? [["general", Object.fromEntries(general)] as [string, Record<string, SettingValue>], ...grouped] : grouped;
  }, [data]);

  return (
    <div className="space-y-6">
      <p className="muted text-sm">
        The settings this server runs with (files, environment and defaults combined), read-only. Secrets are never
        shown: only whether they are set.
      </p>
      {error ? <ErrorNotice error={error} /> : null}
      {loading ? <Spinner label="Loading settings" /> : null}
      {sections.length ? (
        <nav aria-label="Settings sections" className="flex flex-wrap gap-x-3 gap-y-1 text-sm">
          {sections.map(([name]) => (
            <a key={name} href={`#settings-${name}`} className="link">
              {name}
            </a>
          ))}
        </nav>
      ) : null}
      {sections.map(([name, values]) => (
        <section key={name} id={`settings-${name}`} aria-labelledby={`settings-${name}-heading`} className="card scroll-mt-4 p-4 sm:p-5">
          <h2 id={`settings-${name}-heading`} className="font-mono text-sm font-semibold">
            {name}
          </h2>
          <SettingList values={values} />
        </section>
      ))}
    </div>
  );
}

function isRecord(value: SettingValue): value is { [key: string]: SettingValue } {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function SettingList({ values, nested = false }: { values: Record<string, SettingValue>; nested?: boolean }) {
  const entries = Object.entries(values);
  if (!entries.length) return <p className="muted mt-2 text-sm">(none)</p>;
  return (
    <dl
      className={`space-y-2.5 text-sm sm:grid sm:grid-cols-[minmax(10rem,16rem)_minmax(0,1fr)] sm:gap-x-6 sm:gap-y-2 sm:space-y-0 ${
        nested ? "mt-1 border-l border-zinc-200 pl-3 dark:border-zinc-800" : "mt-3"
      }`}
    >
      {entries.map(([key, value]) => (
        <div key={key} className="sm:contents">
          <dt className="break-all font-mono text-xs text-zinc-700 dark:text-zinc-300 sm:pt-0.5">{key}</dt>
          <dd className="min-w-0">
            <SettingValueView value={value} />
          </dd>
        </div>
      ))}
    </dl>
  );
}

function SettingValueView({ value }: { value: SettingValue }) {
  if (value === null) return <span className="muted">not set (null)</span>;
  if (typeof value === "boolean") return <span className="font-mono text-xs">{value ? "true" : "false"}</span>;
  if (typeof value === "number") return <span className="font-mono text-xs tabular-nums">{String(value)}</span>;
  if (typeof value === "string") {
    if (value === "") return <span className="muted">(empty)</span>;
    const secret = value.startsWith("••••") || value === "(not set)";
    return (
      <span className={`break-all font-mono text-xs ${secret ? "text-amber-800 dark:text-amber-200" : ""}`}>{value}</span>
    );
  }
  if (Array.isArray(value)) {
    if (value.length === 0) return <span className="muted">(none)</span>;
    if (value.every((v) => !isRecord(v) && !Array.isArray(v))) {
      return (
        <ul className="space-y-0.5">
          {value.map((v, i) => (
            <li key={i}>
              <SettingValueView value={v} />
            </li>
          ))}
        </ul>
      );
    }
    return (
      <ol className="space-y-2">
        {value.map((v, i) => (
          <li key={i}>{isRecord(v) ? <SettingList values={v} nested /> : <SettingValueView value={v} />}</li>
        ))}
      </ol>
    );
  }
  return <SettingList values={value} nested />;
}
