// The audit trail (auditors and admins): GET /v1/audit/events with filters, newest first,
// paged by next_cursor; each entry opens to its summary. The export (GET /v1/audit/export)
// takes the same filters. "Who saw this document?": GET /v1/audit/documents/{id}/readers.
// "Verify the trail": GET /v1/audit/verification recomputes the chains, so only on demand.

import { useEffect, useId, useRef, useState, type FormEvent, type ReactNode } from "react";

import { ChevronIcon, DownloadIcon, ShieldAlertIcon, ShieldCheckIcon } from "../components/icons";
import { EmptyState, ErrorNotice, Spinner, TableHead, TableScroll, useTitle } from "../components/ui";
import { api, withQuery, type Query } from "../lib/api";
import { can, useAuth } from "../lib/auth";
import { formatDate, plural, shortId } from "../lib/format";
import { useActorNames, useApi } from "../lib/hooks";
import { Link, navigate, useLocation } from "../lib/router";
import type { AuditEntryOut, AuditList, ReadersOut, VerificationOut } from "../lib/types";

const PAGE = 50;
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const FILTERS = ["actor", "action", "resource_type", "resource_id", "since", "until", "request_id"] as const;
type Filter = (typeof FILTERS)[number];
type Filters = Record<Filter, string>;

const ACTIONS = [
  "Document.*",
  "Document.Uploaded",
  "Document.Failed",
  "Document.Deleted",
  "Document.Restored",
  "Document.Held",
  "Document.Released",
  "Document.Erased",
  "Conversation.*",
  "ApiKey.*",
  "User.*",
  "Session.*",
  "Read.*",
  "Refusal.*",
  "Budgets.*",
  "PriceBook.*",
  "Tenant.*",
];
const RESOURCE_TYPES = ["Document", "Conversation", "ApiKey", "User", "Session", "Read", "Refusal", "Budgets", "PriceBook", "Tenant"];

function filtersOf(search: URLSearchParams): Filters {
  const found = {} as Filters;
  for (const name of FILTERS) found[name] = search.get(name) ?? "";
  return found;
}

function queryOf(filters: Filters): Query {
  const query: Query = {};
  for (const name of FILTERS) if (filters[name].trim()) query[name] = filters[name].trim();
  return query;
}

function pathWith(filters: Filters, document: string): string {
  const params = new URLSearchParams();
  for (const name of FILTERS) if (filters[name].trim()) params.set(name, filters[name].trim());
  if (document) params.set("document", document);
  const qs = params.toString();
  return qs ? `/admin/audit?${qs}` : "/admin/audit";
}

/** An ISO time as the value of a datetime-local input (local time, to the minute). */
function toLocalInput(iso: string): string {
  const date = new Date(iso);
  if (!iso || Number.isNaN(date.getTime())) return "";
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}T${pad(date.getHours())}:${pad(date.getMinutes())}`;
}

function fromLocalInput(value: string): string {
  if (!value) return "";
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? "" : date.toISOString();
}

export function AuditPage() {
  useTitle("Audit trail");
  const { search } = useLocation();
  const applied = filtersOf(search);
  const document = search.get("document") ?? "";
  const key = JSON.stringify(applied);

  const [entries, setEntries] = useState<AuditEntryOut[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [more, setMore] = useState(false);
  const [error, setError] = useState<unknown>(null);

  useEffect(() => {
    const controller = new AbortController();
    const filters = JSON.parse(key) as Filters;
    if (filters.resource_id && !UUID_RE.test(filters.resource_id.trim())) {
      setEntries([]);
      setCursor(null);
      setLoading(false);
      setError(new Error("The resource id must be a UUID (like 4dc843f2-6cb6-5398-9758-91e19ca26616)."));
      return;
    }
    setLoading(true);
    setError(null);
    api
      .get<AuditList>("/v1/audit/events", { ...queryOf(filters), limit: PAGE }, controller.signal)
      .then((page) => {
        setEntries(page.items);
        setCursor(page.next_cursor);
      })
      .catch((failure: unknown) => {
        if (!controller.signal.aborted) {
          setEntries([]);
          setCursor(null);
          setError(failure);
        }
      })
      .finally(() => {
        if (!controller.signal.aborted) setLoading(false);
      });
    return () => controller.abort();
  }, [key]);

  async function loadMore() {
    if (!cursor) return;
    setMore(true);
    try {
      const page = await api.get<AuditList>("/v1/audit/events", { ...queryOf(applied), limit: PAGE, cursor });
      setEntries((current) => {
        const seen = new Set(current.map((e) => e.id));
        return [...current, ...page.items.filter((e) => !seen.has(e.id))];
      });
      setCursor(page.next_cursor);
    } catch (failure) {
      setError(failure);
    } finally {
      setMore(false);
    }
  }

  const apply = (next: Filters) => navigate(pathWith(next, document));
  const nameOf = useActorNames();
  const { me } = useAuth();
  const canRead = can(me?.role, "read");
  // From a document (?document=<id>): its readers first; else the look-up waits at the end.
  const readers = (
    <ReadersSection document={document} onDocument={(id) => navigate(pathWith(applied, id), { replace: true })} />
  );
  const exportQuery = queryOf(applied);
  const active = Object.keys(exportQuery).length;

  return (
    <div className="mx-auto max-w-6xl px-4 py-6 sm:px-6 lg:py-8">
      <h1 className="page-title">Audit trail</h1>
      <p className="muted mt-1">
        Every recorded event of this workspace, newest first: who did what to which resource, from which request. Your
        queries here are recorded too.
      </p>

      <VerifySection onResource={(id) => apply({ ...applied, resource_id: id })} />

      <FilterForm applied={applied} onApply={apply} />

      {document ? readers : null}

      <section aria-labelledby="entries-heading" className="mt-6">
        <div className="flex flex-wrap items-baseline justify-between gap-2">
          <h2 id="entries-heading" className="text-base font-semibold">
            Entries{" "}
            <span className="muted text-sm font-normal">
              {loading ? "" : `${entries.length.toLocaleString()}${cursor ? "+" : ""} shown${active ? ", filtered" : ""}`}
            </span>
          </h2>
          <p className="flex flex-wrap gap-x-3 gap-y-1 text-sm">
            <span className="muted">Export{active ? " (same filters)" : " everything"}:</span>
            <a className="link inline-flex items-center gap-1" href={withQuery("/v1/audit/export", { ...exportQuery, format: "jsonl" })} download>
              <DownloadIcon />
              JSON lines
            </a>
            <a className="link inline-flex items-center gap-1" href={withQuery("/v1/audit/export", { ...exportQuery, format: "csv" })} download>
              <DownloadIcon />
              CSV
            </a>
          </p>
        </div>
        <div className="mt-3 space-y-3">
          {error ? <ErrorNotice error={error} /> : null}
          {loading ? (
            <div className="py-8 text-center">
              <Spinner label="Loading the audit trail" />
            </div>
          ) : entries.length === 0 && !error ? (
            <EmptyState title={active ? "No entry matches these filters" : "No entries yet"} />
          ) : entries.length ? (
            <ul className="card divide-y divide-zinc-200 dark:divide-zinc-800">
              {entries.map((entry) => (
                <EntryRow key={entry.id} entry={entry} actor={nameOf(entry.actor)} canRead={canRead} onFilter={(name, value) => apply({ ...applied, [name]: value })} onReaders={(id) => navigate(pathWith(applied, id))} />
              ))}
            </ul>
          ) : null}
          {cursor && !loading ? (
            <div className="text-center">
              <button type="button" className="btn-secondary" onClick={() => void loadMore()} disabled={more}>
                {more ? "Loading…" : "Load older entries"}
              </button>
            </div>
          ) : null}
        </div>
      </section>

      {!document ? readers : null}
    </div>
  );
}

function FilterForm({ applied, onApply }: { applied: Filters; onApply: (f: Filters) => void }) {
  // The draft keeps the time inputs' own values (local time); the address keeps ISO times.
  const local = (f: Filters): Filters => ({ ...f, since: toLocalInput(f.since), until: toLocalInput(f.until) });
  const [draft, setDraft] = useState<Filters>(() => local(applied));
  const appliedKey = JSON.stringify(applied);
  useEffect(() => setDraft(local(JSON.parse(appliedKey) as Filters)), [appliedKey]);
  const set = (name: Filter) => (event: { target: { value: string } }) =>
    setDraft((d) => ({ ...d, [name]: event.target.value }));

  function submit(event: FormEvent) {
    event.preventDefault();
    onApply({ ...draft, since: fromLocalInput(draft.since), until: fromLocalInput(draft.until) });
  }
  const empty = {} as Filters;
  for (const name of FILTERS) empty[name] = "";

  return (
    <form onSubmit={submit} className="card mt-5 p-4" aria-labelledby="filters-heading">
      <h2 id="filters-heading" className="text-sm font-semibold">
        Filters
      </h2>
      <div className="mt-3 grid gap-3 sm:grid-cols-2 lg:grid-cols-4">
        <Field id="f-action" label="Action" hint="* is a wildcard: Document.*">
          <input id="f-action" className="input" list="audit-actions" value={draft.action} onChange={set("action")} placeholder="Document.*" aria-describedby="f-action-hint" />
          <datalist id="audit-actions">
            {ACTIONS.map((a) => (
              <option key={a} value={a} />
            ))}
          </datalist>
        </Field>
        <Field id="f-actor" label="Actor" hint="key:<id>, user:<id>, worker:…">
          <input id="f-actor" className="input" value={draft.actor} onChange={set("actor")} aria-describedby="f-actor-hint" spellCheck={false} />
        </Field>
        <Field id="f-type" label="Resource type">
          <input id="f-type" className="input" list="audit-types" value={draft.resource_type} onChange={set("resource_type")} />
          <datalist id="audit-types">
            {RESOURCE_TYPES.map((t) => (
              <option key={t} value={t} />
            ))}
          </datalist>
        </Field>
        <Field id="f-id" label="Resource id" hint="A UUID">
          <input id="f-id" className="input font-mono text-xs" value={draft.resource_id} onChange={set("resource_id")} aria-describedby="f-id-hint" spellCheck={false} />
        </Field>
        <Field id="f-since" label="From">
          <input
            id="f-since"
            type="datetime-local"
            className="input"
            value={draft.since}
            onChange={set("since")}
          />
        </Field>
        <Field id="f-until" label="Until">
          <input
            id="f-until"
            type="datetime-local"
            className="input"
            value={draft.until}
            onChange={set("until")}
          />
        </Field>
        <Field id="f-request" label="Request id">
          <input id="f-request" className="input font-mono text-xs" value={draft.request_id} onChange={set("request_id")} spellCheck={false} />
        </Field>
        <div className="flex items-end gap-2">
          <button type="submit" className="btn-primary">
            Apply
          </button>
          <button type="button" className="btn-secondary" onClick={() => onApply(empty)}>
            Clear
          </button>
        </div>
      </div>
    </form>
  );
}

function Field({ id, label, hint, children }: { id: string; label: string; hint?: string; children: ReactNode }) {
  return (
    <div className="min-w-0">
      <label htmlFor={id} className="label">
        {label}
      </label>
      {children}
      {hint ? (
        <p id={`${id}-hint`} className="muted mt-1 text-xs">
          {hint}
        </p>
      ) : null}
    </div>
  );
}

function valueText(value: unknown): string {
  if (value === null || value === undefined) return "—";
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

function EntryRow({
  entry,
  actor,
  canRead,
  onFilter,
  onReaders,
}: {
  entry: AuditEntryOut;
  actor: string;
  canRead: boolean;
  onFilter: (name: Filter, value: string) => void;
  onReaders: (documentId: string) => void;
}) {
  const [open, setOpen] = useState(false);
  const id = useId();
  const isDocument = entry.resource.type === "Document";
  const values = Object.entries(entry.changes.values);
  return (
    <li>
      <button
        type="button"
        aria-expanded={open}
        aria-controls={id}
        onClick={() => setOpen((v) => !v)}
        className="flex w-full items-start gap-2 px-3 py-2.5 text-left hover:bg-zinc-50 dark:hover:bg-zinc-800/40 sm:px-4"
      >
        <ChevronIcon className={`mt-0.5 shrink-0 text-zinc-500 transition-transform motion-reduce:transition-none ${open ? "rotate-90" : ""}`} />
        <span className="grid min-w-0 flex-1 gap-x-4 gap-y-0.5 sm:grid-cols-[11rem_minmax(0,14rem)_minmax(0,1fr)]">
          <span className="muted whitespace-nowrap text-xs sm:text-sm">
            <time dateTime={entry.occurred_at}>{formatDate(entry.occurred_at)}</time>
          </span>
          <span className="break-words font-medium text-zinc-900 dark:text-zinc-100">{entry.action}</span>
          <span className="min-w-0 break-words text-zinc-700 dark:text-zinc-300">
            <span className="sr-only">by </span>
            {actor}
            <span className="muted"> · {entry.resource.type} {shortId(entry.resource.id)}</span>
          </span>
        </span>
      </button>
      {open ? (
        <div id={id} className="border-t border-zinc-100 bg-zinc-50/60 px-4 py-3 text-sm dark:border-zinc-800 dark:bg-zinc-900/40 sm:pl-10">
          <dl className="grid gap-x-6 gap-y-2 sm:grid-cols-[10rem_minmax(0,1fr)]">
            <Term label="When">
              {formatDate(entry.occurred_at)} <span className="muted font-mono text-xs">({entry.occurred_at})</span>
            </Term>
            <Term label="Actor">
              <span className="break-all">{entry.actor}</span>
              {entry.actor_role ? <span className="muted"> · {entry.actor_role}</span> : null}{" "}
              <button type="button" className="link text-xs" onClick={() => onFilter("actor", entry.actor)}>
                Only this actor
              </button>
            </Term>
            <Term label="Resource">
              {entry.resource.type} <span className="break-all font-mono text-xs">{entry.resource.id}</span>
              <span className="muted"> · version {entry.resource.version}</span>
              <span className="mt-1 flex flex-wrap gap-x-3">
                <button type="button" className="link text-xs" onClick={() => onFilter("resource_id", entry.resource.id)}>
                  Only this resource
                </button>
                {isDocument && canRead ? (
                  <Link to={`/documents/${entry.resource.id}`} className="link text-xs">
                    Open the document page
                  </Link>
                ) : null}
                {isDocument ? (
                  <button type="button" className="link text-xs" onClick={() => onReaders(entry.resource.id)}>
                    Who saw this document?
                  </button>
                ) : null}
              </span>
            </Term>
            <Term label="Request">
              {entry.request_id ? (
                <>
                  <span className="break-all font-mono text-xs">{entry.request_id}</span>{" "}
                  <button type="button" className="link text-xs" onClick={() => onFilter("request_id", entry.request_id ?? "")}>
                    Everything of this request
                  </button>
                </>
              ) : (
                <span className="muted">none (not from a request)</span>
              )}
            </Term>
            <Term label="Client">
              {entry.client_address ?? "—"}
              {entry.user_agent ? <span className="muted block break-all text-xs">{entry.user_agent}</span> : null}
            </Term>
            <Term label="Recorded">
              {entry.context} context, position {entry.position.toLocaleString()}
            </Term>
            <Term label="Fields">
              {entry.changes.fields.length ? (
                <span className="break-words font-mono text-xs">{entry.changes.fields.join(", ")}</span>
              ) : (
                <span className="muted">none</span>
              )}
            </Term>
            {values.length ? (
              <Term label="Values">
                <dl className="grid grid-cols-[minmax(0,auto)_minmax(0,1fr)] gap-x-3 gap-y-1 text-xs">
                  {values.map(([name, value]) => (
                    <div key={name} className="contents">
                      <dt className="muted font-mono">{name}</dt>
                      <dd className="break-all font-mono">{valueText(value)}</dd>
                    </div>
                  ))}
                </dl>
                <p className="muted mt-1 text-xs">Content and secrets are never shown here.</p>
              </Term>
            ) : null}
            {entry.chain ? (
              <Term label="Chain">
                entry {entry.chain.index.toLocaleString()} ·{" "}
                <span className="break-all font-mono text-xs" title="This entry's hash">
                  {entry.chain.entry_hash}
                </span>
              </Term>
            ) : null}
          </dl>
        </div>
      ) : null}
    </li>
  );
}

function Term({ label, children }: { label: string; children: ReactNode }) {
  return (
    <div className="contents">
      <dt className="font-medium text-zinc-700 dark:text-zinc-300">{label}</dt>
      <dd className="min-w-0">{children}</dd>
    </div>
  );
}

/** "Who saw this document?" from a document id (typed, or from an entry or the document page). */
export function ReadersSection({ document, onDocument }: { document: string; onDocument: (id: string) => void }) {
  const [draft, setDraft] = useState(document);
  const [invalid, setInvalid] = useState(false);
  useEffect(() => setDraft(document), [document]);
  const valid = UUID_RE.test(document);
  const readers = useApi<ReadersOut>(valid ? `/v1/audit/documents/${encodeURIComponent(document)}/readers` : null);
  const nameOf = useActorNames();

  function submit(event: FormEvent) {
    event.preventDefault();
    const id = draft.trim();
    setInvalid(!UUID_RE.test(id));
    if (UUID_RE.test(id)) onDocument(id);
  }

  return (
    <section aria-labelledby="readers-heading" className={document ? "mt-8" : "mt-10"}>
      <h2 id="readers-heading" className="text-base font-semibold">
        Who saw this document?
      </h2>
      <p className="muted mt-1 text-sm">
        Everyone who was shown any part of a document (in search results, answers, downloads…), by which route, when
        first and last.
      </p>
      <form onSubmit={submit} className="mt-3 flex flex-col gap-2 sm:flex-row sm:items-end">
        <div className="min-w-0 flex-1">
          <label htmlFor="readers-doc" className="label">
            Document id
          </label>
          <input
            id="readers-doc"
            className="input font-mono text-xs"
            value={draft}
            onChange={(e) => setDraft(e.target.value)}
            aria-invalid={invalid || undefined}
            aria-describedby={invalid ? "readers-doc-error" : undefined}
            spellCheck={false}
          />
        </div>
        <button type="submit" className="btn-primary">
          Show readers
        </button>
      </form>
      {invalid ? (
        <p id="readers-doc-error" className="mt-1 text-sm text-red-700 dark:text-red-300">
          A document id is a UUID, like 4dc843f2-6cb6-5398-9758-91e19ca26616.
        </p>
      ) : null}
      <div className="mt-3">
        {readers.error ? <ErrorNotice error={readers.error} /> : null}
        {valid && readers.loading ? (
          <Spinner label="Loading readers" />
        ) : readers.data ? (
          readers.data.readers.length === 0 ? (
            <EmptyState title="Nobody was shown this document">(or it does not exist)</EmptyState>
          ) : (
            <TableScroll label="Readers" className="card">
              <table className="w-full text-sm">
                <caption className="sr-only">
                  Readers of document {document}: {plural(readers.data.readers.length, "reader")}
                </caption>
                <TableHead
                  columns={[
                    { label: "Who" },
                    { label: "Route" },
                    { label: "Times", className: "text-right" },
                    { label: "First" },
                    { label: "Last" },
                  ]}
                />
                <tbody className="divide-y divide-zinc-200 dark:divide-zinc-800">
                  {readers.data.readers.map((r) => (
                    <tr key={`${r.actor}/${r.route}`}>
                      <td className="table-cell break-words font-medium" title={r.actor}>
                        {nameOf(r.actor)}
                      </td>
                      <td className="table-cell">{r.route}</td>
                      <td className="table-cell text-right tabular-nums">{r.times.toLocaleString()}</td>
                      <td className="table-cell muted whitespace-nowrap">{formatDate(r.first_seen)}</td>
                      <td className="table-cell muted whitespace-nowrap">{formatDate(r.last_seen)}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </TableScroll>
          )
        ) : null}
      </div>
    </section>
  );
}

// ------------------------------------------------------------------ verification

const FINDING_KINDS: Record<string, string> = {
  changed: "Changed entry",
  missing: "Event gone from the event store",
  missing_from_trail: "Event missing from the trail",
  truncated: "Chain cut short",
  checkpoint_mismatch: "Checkpoint does not match",
  bad_signature: "Checkpoint not signed by the audit key",
  unreadable: "Unreadable event",
};

interface Finding {
  kind: string;
  where: [string, string][];
  detail: string;
}

/** A finding as the API words it: "<kind>: tenant T, context C, position P, aggregate A: <detail>". */
function parseFinding(text: string): Finding | null {
  const match = /^([a-z_]+): (.*?): (.+)$/s.exec(text);
  if (!match) return null;
  const where: [string, string][] = [];
  for (const part of (match[2] ?? "").split(", ")) {
    const space = part.indexOf(" ");
    if (space > 0) where.push([part.slice(0, space), part.slice(space + 1)]);
  }
  return { kind: match[1] ?? "", where, detail: match[3] ?? "" };
}

/** "the event …" as a sentence: "The event ….". */
function sentence(text: string): string {
  const capital = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

function contextOf(key: string, tenant: string): string {
  return key.startsWith(`${tenant}/`) ? key.slice(tenant.length + 1) : key;
}

function announcementOf(result: VerificationOut): string {
  if (result.ok) {
    const newer = Object.values(result.not_yet_covered).reduce((sum, n) => sum + n, 0);
    return (
      `Verification finished: the trail is intact. ${plural(result.entries, "entry", "entries")} and ` +
      `${plural(result.checkpoints, "signed checkpoint")} checked; ${plural(newer, "entry is", "entries are")} newer ` +
      "than the newest checkpoint."
    );
  }
  const problems = result.findings.length + result.unreadable_checkpoints.length;
  return `Verification finished: the trail is BROKEN. ${plural(problems, "problem")} found, listed below.`;
}

/** "Verify the trail": on demand only (it recomputes every chain), never on a timer. */
function VerifySection({ onResource }: { onResource: (id: string) => void }) {
  const [busy, setBusy] = useState(false);
  const [result, setResult] = useState<VerificationOut | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [announcement, setAnnouncement] = useState("");
  const running = useRef<AbortController | null>(null);
  useEffect(() => () => running.current?.abort(), []);

  async function verify() {
    if (running.current) return;
    const controller = new AbortController();
    running.current = controller;
    setBusy(true);
    setError(null);
    setAnnouncement("");
    try {
      const found = await api.get<VerificationOut>("/v1/audit/verification", undefined, controller.signal);
      setResult(found);
      setAnnouncement(announcementOf(found));
    } catch (failure) {
      if (!controller.signal.aborted) setError(failure);
    } finally {
      if (!controller.signal.aborted) {
        running.current = null;
        setBusy(false);
      }
    }
  }

  return (
    <section aria-labelledby="verify-heading" className="card mt-5 p-4">
      <div className="flex flex-col gap-3 sm:flex-row sm:items-start sm:justify-between">
        <div className="min-w-0">
          <h2 id="verify-heading" className="text-sm font-semibold">
            Verify the trail
          </h2>
          <p className="muted mt-1 text-sm">
            The trail is hash-chained and signed in checkpoints. Verifying recomputes every chain of this workspace from
            the event store and checks it against the trail and the signed checkpoints (as{" "}
            <code className="font-mono text-xs">kf audit verify</code> does). It reads everything, so it runs only when
            you ask.
          </p>
        </div>
        <button
          type="button"
          className={`btn-primary shrink-0 self-start ${busy ? "cursor-wait opacity-60" : ""}`}
          onClick={() => void verify()}
          aria-disabled={busy || undefined}
          aria-describedby={result ? "verify-checked" : undefined}
        >
          {busy ? (
            <span
              aria-hidden="true"
              className="h-3.5 w-3.5 animate-spin rounded-full border-2 border-white/40 border-t-white motion-reduce:animate-none"
            />
          ) : (
            <ShieldCheckIcon />
          )}
          {busy ? "Verifying…" : result ? "Verify again" : "Verify the trail"}
        </button>
      </div>
      <p className="sr-only" role="status" aria-live="polite" aria-atomic="true">
        {announcement}
      </p>
      {error ? (
        <div className="mt-3">
          <ErrorNotice error={error} />
        </div>
      ) : null}
      {result ? (
        <div aria-busy={busy || undefined}>
          <VerificationResult result={result} onResource={onResource} />
        </div>
      ) : null}
    </section>
  );
}

function VerificationResult({ result, onResource }: { result: VerificationOut; onResource: (id: string) => void }) {
  const covered = Object.entries(result.not_yet_covered)
    .filter(([, n]) => n > 0)
    .map(([key, n]) => [contextOf(key, result.tenant_id), n] as const);
  const newer = covered.reduce((sum, [, n]) => sum + n, 0);
  const problems = result.findings.length + result.unreadable_checkpoints.length;
  const tone = result.ok
    ? "border-emerald-200 bg-emerald-50 text-emerald-900 dark:border-emerald-900/60 dark:bg-emerald-950/40 dark:text-emerald-100"
    : "border-red-200 bg-red-50 text-red-900 dark:border-red-900/60 dark:bg-red-950/40 dark:text-red-100";

  return (
    <div className={`mt-4 rounded-lg border p-4 text-sm ${tone}`}>
      <div className="flex items-start gap-2">
        {result.ok ? (
          <ShieldCheckIcon width="20" height="20" className="mt-0.5 shrink-0" />
        ) : (
          <ShieldAlertIcon width="20" height="20" className="mt-0.5 shrink-0" />
        )}
        <div className="min-w-0">
          <h3 className="text-base font-semibold">
            {result.ok ? "Intact" : "BROKEN"}
            <span className="font-normal">
              {result.ok
                ? ": every chain recomputes and matches"
                : problems
                  ? `: ${plural(problems, "problem")} found`
                  : ": the server found a problem it did not describe"}
            </span>
          </h3>
          <p id="verify-checked" className="mt-0.5 opacity-90">
            Checked <time dateTime={result.checked_at}>{formatDate(result.checked_at)}</time>
          </p>
        </div>
      </div>

      {!result.ok ? (
        <ol className="mt-3 space-y-2">
          {result.unreadable_checkpoints.map((problem, i) => (
            <li key={`u${i}`} className="rounded-md border border-red-200 bg-white p-3 text-zinc-900 dark:border-red-900/60 dark:bg-zinc-900 dark:text-zinc-100">
              <p className="font-semibold text-red-800 dark:text-red-300">Unreadable checkpoint</p>
              <p className="mt-0.5 break-words">{problem}</p>
            </li>
          ))}
          {result.findings.map((text, i) => (
            <FindingItem key={`f${i}`} text={text} tenant={result.tenant_id} onResource={onResource} />
          ))}
        </ol>
      ) : null}

      <dl className="mt-3 grid grid-cols-[minmax(0,1fr)_auto] gap-x-4 gap-y-1 sm:max-w-md">
        <dt>Entries checked</dt>
        <dd className="text-right font-semibold tabular-nums">{result.entries.toLocaleString()}</dd>
        <dt>Signed checkpoints checked</dt>
        <dd className="text-right font-semibold tabular-nums">{result.checkpoints.toLocaleString()}</dd>
        <dt>
          Entries newer than the newest checkpoint
          {covered.length ? (
            <span className="block text-xs opacity-90">
              {covered.map(([context, n]) => `${context} ${n.toLocaleString()}`).join(" · ")}
            </span>
          ) : null}
        </dt>
        <dd className="text-right font-semibold tabular-nums">{newer.toLocaleString()}</dd>
        {result.not_yet_projected ? (
          <>
            <dt>Events not yet in the trail</dt>
            <dd className="text-right font-semibold tabular-nums">{result.not_yet_projected.toLocaleString()}</dd>
          </>
        ) : null}
        {result.dropped_by_retention ? (
          <>
            <dt>Access records dropped by retention</dt>
            <dd className="text-right font-semibold tabular-nums">{result.dropped_by_retention.toLocaleString()}</dd>
          </>
        ) : null}
      </dl>
      <p className="mt-2 text-xs opacity-90">
        {result.checkpoints === 0
          ? "No checkpoint has been signed yet, so nothing is covered by one: every entry was checked against the trail's recorded hashes only."
          : newer
            ? "Entries newer than the newest checkpoint were checked against the trail's recorded hashes; the next checkpoint will cover them."
            : "Every entry is covered by a signed checkpoint."}
        {result.not_yet_projected ? " Events not yet in the trail are still being recorded (not a problem)." : ""}
        {result.dropped_by_retention ? " Access records dropped by retention are expected, not missing." : ""}
      </p>
    </div>
  );
}

function FindingItem({ text, tenant, onResource }: { text: string; tenant: string; onResource: (id: string) => void }) {
  const finding = parseFinding(text);
  const box = "rounded-md border border-red-200 bg-white p-3 text-zinc-900 dark:border-red-900/60 dark:bg-zinc-900 dark:text-zinc-100";
  if (!finding) {
    return (
      <li className={box}>
        <p className="break-words">{text}</p>
      </li>
    );
  }
  const where = finding.where.filter(([name, value]) => !(name === "tenant" && value === tenant));
  const aggregate = finding.where.find(([name]) => name === "aggregate")?.[1] ?? "";
  return (
    <li className={box}>
      <p className="font-semibold text-red-800 dark:text-red-300">
        {FINDING_KINDS[finding.kind] ?? finding.kind}{" "}
        <span className="font-mono text-xs font-normal text-zinc-600 dark:text-zinc-400">({finding.kind})</span>
      </p>
      <p className="mt-0.5 break-words">{sentence(finding.detail)}</p>
      {where.length ? (
        <p className="muted mt-1 text-xs">
          {where.map(([name, value], i) => (
            <span key={name}>
              {i ? " · " : ""}
              {name} <span className="break-all font-mono">{value}</span>
            </span>
          ))}
        </p>
      ) : null}
      {UUID_RE.test(aggregate) ? (
        <button type="button" className="link mt-1 text-xs" onClick={() => onResource(aggregate)}>
          Show this resource&apos;s entries
        </button>
      ) : null}
    </li>
  );
}
