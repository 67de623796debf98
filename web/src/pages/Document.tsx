// One document: GET /v1/documents/{id} (status, sizes, counts, failure), its history
// (GET /v1/documents/{id}/history), the file (…/content, inline or ?download=true); for
// editors: delete and restore; for admins: legal hold (POST/DELETE …/hold), erase (POST
// …/erase, after typing the file name) and the erasure certificate (GET …/erasure).

import { useEffect, useId, useMemo, useRef, useState, type FormEvent, type ReactNode } from "react";

import { DownloadIcon, ExternalIcon } from "../components/icons";
import { ConfirmDialog, EmptyState, ErrorNotice, Spinner, StatusBadge, useTitle } from "../components/ui";
import { ApiError, api } from "../lib/api";
import { can, useAuth } from "../lib/auth";
import { contentHref, formatBytes, formatDate, plural } from "../lib/format";
import { useActorNames, useApi, useInterval } from "../lib/hooks";
import { Link } from "../lib/router";
import type {
  Accepted,
  DocumentHistory,
  DocumentOut,
  DocumentStatus,
  SignedErasureCertificate,
} from "../lib/types";

const FINAL: ReadonlySet<DocumentStatus> = new Set(["embedded", "failed", "deleted", "erased"]);
const POLL_MS = 2000;

export function DocumentPage({ id }: { id: string }) {
  const { me } = useAuth();
  const admin = can(me?.role, "admin");
  const editor = can(me?.role, "edit");
  const base = `/v1/documents/${encodeURIComponent(id)}`;
  const doc = useApi<DocumentOut>(base);
  const history = useApi<DocumentHistory>(`${base}/history`);
  const nameOf = useActorNames();
  const [busy, setBusy] = useState<string | null>(null);
  const [actionError, setActionError] = useState<unknown>(null);
  const [announcement, setAnnouncement] = useState("");
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [confirmLift, setConfirmLift] = useState(false);
  const [erasing, setErasing] = useState(false);
  const [erasedAt, setErasedAt] = useState<number | null>(null);

  const d = doc.data;
  useTitle(d ? d.filename : "Document");
  const processing = d !== null && !FINAL.has(d.status);
  useInterval(
    () => {
      void doc.reload();
      void history.reload();
    },
    POLL_MS,
    processing,
  );

  /** Run a command, then read the document (and its history) at least at its position. */
  async function act(name: string, run: () => Promise<Accepted>, done: string): Promise<boolean> {
    setBusy(name);
    setActionError(null);
    try {
      const accepted = await run();
      await doc.reload({ min_position: accepted.position });
      // The history comes from the audit trail, which follows a moment later.
      for (const delay of [0, 1000, 3000]) window.setTimeout(() => void history.reload(), delay);
      setAnnouncement(done);
      return true;
    } catch (failure) {
      setActionError(failure);
      return false;
    } finally {
      setBusy(null);
    }
  }

  if (doc.loading && !d) {
    return (
      <div className="py-16 text-center">
        <Spinner label="Loading the document" />
      </div>
    );
  }
  if (!d) {
    const missing = doc.error instanceof ApiError && (doc.error.status === 404 || doc.error.status === 422);
    return (
      <div className="mx-auto max-w-3xl px-4 py-6 sm:px-6 lg:py-8">
        <BackLink />
        <h1 className="page-title mt-3">{missing ? "No such document" : "Document"}</h1>
        <div className="mt-4">
          <ErrorNotice error={missing ? new Error("There is no document with this id, or you may not see it.") : doc.error} />
        </div>
      </div>
    );
  }

  const gone = d.status === "deleted" || d.status === "erased";
  const title = d.status === "erased" ? "Erased document" : d.filename;

  return (
    <div className="mx-auto max-w-5xl px-4 py-6 sm:px-6 lg:py-8">
      <BackLink />
      <p className="sr-only" role="status" aria-live="polite">
        {announcement}
      </p>

      <div className="mt-3 flex flex-col gap-3 sm:flex-row sm:items-start sm:justify-between">
        <div className="min-w-0">
          <h1 className="page-title break-words">{title}</h1>
          <p className="mt-2 flex flex-wrap items-center gap-2">
            <StatusBadge status={d.status} />
            {d.legal_hold ? (
              <span className="rounded-full bg-amber-50 px-2 py-0.5 text-xs font-medium text-amber-900 ring-1 ring-inset ring-amber-200 dark:bg-amber-950/50 dark:text-amber-100 dark:ring-amber-900">
                legal hold
              </span>
            ) : null}
            {processing ? (
              <span className="muted text-xs">
                {d.ahead ? `${d.ahead === 1 ? "1 document" : `${d.ahead} documents`} ahead of it. ` : ""}
                Processing; this page updates by itself.
              </span>
            ) : null}
          </p>
        </div>
        {!gone ? (
          <div className="flex shrink-0 flex-wrap gap-2">
            <a className="btn-secondary" href={contentHref(d.id, null)} target="_blank" rel="noopener">
              <ExternalIcon />
              Open<span className="sr-only"> {d.filename} (opens in a new tab)</span>
            </a>
            <a className="btn-secondary" href={`${contentHref(d.id, null)}?download=true`} download>
              <DownloadIcon />
              Download<span className="sr-only"> {d.filename}</span>
            </a>
          </div>
        ) : null}
      </div>

      {actionError ? (
        <div className="mt-4">
          <ErrorNotice error={actionError} />
        </div>
      ) : null}

      {d.failure ? (
        <div
          role="note"
          className="mt-5 rounded-md border border-red-200 bg-red-50 px-4 py-3 text-sm text-red-900 dark:border-red-900/60 dark:bg-red-950/40 dark:text-red-100"
        >
          <p className="font-medium">Processing failed at the {d.failure.stage} stage</p>
          <p className="mt-1 break-words">{d.failure.reason || "No reason was recorded."}</p>
          {d.failure.code ? <p className="mt-1 font-mono text-xs">{d.failure.code}</p> : null}
        </div>
      ) : null}

      <section aria-labelledby="facts-heading" className="card mt-6 p-4 sm:p-5">
        <h2 id="facts-heading" className="text-base font-semibold">
          Details
        </h2>
        <dl className="mt-3 grid grid-cols-2 gap-x-6 gap-y-3 text-sm lg:grid-cols-3">
          <Fact label="Type">{d.media_type}</Fact>
          <Fact label="Size">
            {formatBytes(d.size_bytes)} <span className="muted">({d.size_bytes.toLocaleString()} bytes)</span>
          </Fact>
          <Fact label="Pages">{d.page_count !== null ? d.page_count.toLocaleString() : "—"}</Fact>
          <Fact label="Characters">{d.char_count !== null ? d.char_count.toLocaleString() : "—"}</Fact>
          <Fact label="Chunks">{d.chunk_count !== null ? d.chunk_count.toLocaleString() : "—"}</Fact>
          <Fact label="Uploaded">
            {formatDate(d.uploaded_at)} <span className="muted block break-all text-xs">by {nameOf(d.uploaded_by)}</span>
          </Fact>
          <Fact label="Last change">{formatDate(d.updated_at)}</Fact>
          {d.deleted_at ? <Fact label={d.status === "erased" ? "Removed" : "Deleted"}>{formatDate(d.deleted_at)}</Fact> : null}
          <Fact label="Version">{d.version}</Fact>
          <Fact label="SHA-256" wide>
            <span className="break-all font-mono text-xs">{d.content_sha256}</span>
          </Fact>
          <Fact label="Id" wide>
            <span className="break-all font-mono text-xs">{d.id}</span>
          </Fact>
          {d.warnings.length ? (
            <Fact label="Warnings" wide>
              <ul className="list-disc space-y-0.5 pl-5 text-amber-800 dark:text-amber-200">
                {d.warnings.map((w) => (
                  <li key={w} className="break-words">
                    {w}
                  </li>
                ))}
              </ul>
            </Fact>
          ) : null}
        </dl>
        {can(me?.role, "audit") ? (
          <p className="mt-4 text-sm">
            <Link className="link" to={`/admin/audit?resource_id=${encodeURIComponent(d.id)}&document=${encodeURIComponent(d.id)}`}>
              Who saw this document? Its audit entries →
            </Link>
          </p>
        ) : null}
      </section>

      {editor && d.status !== "erased" ? (
        <section aria-labelledby="manage-heading" className="card mt-6 p-4 sm:p-5">
          <h2 id="manage-heading" className="text-base font-semibold">
            Manage
          </h2>
          <div className="mt-3 space-y-5">
            {d.status === "deleted" ? (
              <div>
                <p className="text-sm">
                  In the trash since {formatDate(d.deleted_at)}. Restoring puts it back in search and chat, as it was;
                  the trash is erased after its retention period.
                </p>
                <button
                  type="button"
                  className="btn-primary mt-2"
                  disabled={busy !== null}
                  onClick={() => void act("restore", () => api.post<Accepted>(`${base}/restore`), "Document restored.")}
                >
                  {busy === "restore" ? "Restoring…" : "Restore"}
                </button>
              </div>
            ) : (
              <div>
                <p className="text-sm">Delete moves it to the trash: gone from search and chat; an editor can restore it.</p>
                <button
                  type="button"
                  className="btn-secondary mt-2 text-red-700 dark:text-red-300"
                  disabled={busy !== null || d.legal_hold}
                  onClick={() => setConfirmDelete(true)}
                >
                  Delete
                </button>
                {d.legal_hold ? <p className="muted mt-1 text-xs">Under legal hold: it cannot be deleted.</p> : null}
              </div>
            )}
            {admin ? (
              <HoldControl
                held={d.legal_hold}
                busy={busy}
                history={history.data}
                onPlace={(reason) =>
                  act("hold", () => api.post<Accepted>(`${base}/hold`, { reason }), "Legal hold placed.")
                }
                onLift={() => setConfirmLift(true)}
              />
            ) : null}
          </div>
        </section>
      ) : null}

      {admin && d.status !== "erased" ? (
        <section
          aria-labelledby="erase-heading"
          className="mt-6 rounded-lg border border-red-300 p-4 dark:border-red-900 sm:p-5"
        >
          <h2 id="erase-heading" className="text-base font-semibold text-red-800 dark:text-red-200">
            Erase
          </h2>
          <p className="mt-2 text-sm">
            Erasing destroys the document's key: its bytes, text, chunks, vectors and file name, and every answer and
            prompt that quoted it, can no longer be read by anyone. <strong>It cannot be undone.</strong> The audit trail
            keeps that it existed, who read it, and who erased it when; a signed certificate shows what was erased.
          </p>
          <button
            type="button"
            className="btn-danger mt-3"
            disabled={busy !== null || d.legal_hold}
            onClick={() => {
              setActionError(null);
              setErasing(true);
            }}
          >
            Erase…
          </button>
          {d.legal_hold ? <p className="muted mt-1 text-xs">Under legal hold: lift the hold before erasing.</p> : null}
        </section>
      ) : null}

      {admin && d.status === "erased" ? <Certificate base={base} id={d.id} since={erasedAt} nameOf={nameOf} /> : null}

      <section aria-labelledby="history-heading" className="mt-8">
        <h2 id="history-heading" className="text-base font-semibold">
          History
        </h2>
        <div className="mt-3">
          {history.error ? <ErrorNotice error={history.error} /> : null}
          {history.loading && !history.data ? (
            <Spinner label="Loading the history" />
          ) : history.data && history.data.steps.length === 0 ? (
            <EmptyState title="No history recorded" />
          ) : history.data ? (
            <ol className="relative space-y-4 border-l border-zinc-200 pl-5 dark:border-zinc-800">
              {history.data.steps.map((step) => (
                <li key={`${step.version}-${step.action}`} className="relative">
                  <span
                    aria-hidden="true"
                    className={`absolute -left-[1.65rem] top-1 h-3 w-3 rounded-full ring-4 ring-white dark:ring-zinc-950 ${
                      step.action.endsWith("Failed") || step.action.endsWith("Erased")
                        ? "bg-red-600 dark:bg-red-400"
                        : "bg-indigo-600 dark:bg-indigo-400"
                    }`}
                  />
                  <p className="font-medium text-zinc-900 dark:text-zinc-100">{step.action.replace(/^Document\./, "")}</p>
                  <p className="muted text-xs">
                    <time dateTime={step.occurred_at}>{formatDate(step.occurred_at)}</time> · {nameOf(step.actor)}
                    {step.actor_role ? ` (${step.actor_role})` : ""}
                  </p>
                  <StepValues values={step.changes.values} />
                </li>
              ))}
            </ol>
          ) : null}
        </div>
      </section>

      <ConfirmDialog
        open={confirmDelete}
        title="Delete document?"
        confirmLabel="Delete"
        busy={busy === "delete"}
        error={actionError}
        onConfirm={() =>
          void act("delete", () => api.del<Accepted>(base), "Document deleted.").then((ok) => {
            if (ok) setConfirmDelete(false);
          })
        }
        onCancel={() => setConfirmDelete(false)}
      >
        <p>
          <strong className="break-all font-medium text-zinc-900 dark:text-zinc-100">{d.filename}</strong> will be removed
          from search and chat. It can be restored from the trash until it is erased.
        </p>
      </ConfirmDialog>

      <ConfirmDialog
        open={confirmLift}
        title="Lift the legal hold?"
        confirmLabel="Lift hold"
        danger={false}
        busy={busy === "release"}
        error={actionError}
        onConfirm={() =>
          void act("release", () => api.del<Accepted>(`${base}/hold`), "Legal hold lifted.").then((ok) => {
            if (ok) setConfirmLift(false);
          })
        }
        onCancel={() => setConfirmLift(false)}
      >
        <p>Once lifted, the document can be deleted and erased again, also by retention.</p>
      </ConfirmDialog>

      <EraseDialog
        open={erasing}
        filename={d.filename}
        busy={busy === "erase"}
        error={actionError}
        onCancel={() => setErasing(false)}
        onErase={() =>
          void act("erase", () => api.post<Accepted>(`${base}/erase`), "Document erased. The certificate follows.").then(
            (ok) => {
              if (ok) {
                setErasing(false);
                setErasedAt(Date.now());
              }
            },
          )
        }
      />
    </div>
  );
}

function BackLink() {
  return (
    <Link to="/documents" className="link text-sm">
      ← Documents
    </Link>
  );
}

function Fact({ label, children, wide = false }: { label: string; children: ReactNode; wide?: boolean }) {
  return (
    <div className={`min-w-0 ${wide ? "col-span-2 lg:col-span-3" : ""}`}>
      <dt className="muted text-xs font-medium uppercase tracking-wide">{label}</dt>
      <dd className="mt-0.5">{children}</dd>
    </div>
  );
}

function StepValues({ values }: { values: Record<string, unknown> }) {
  const entries = Object.entries(values).filter(([, v]) => v !== null && v !== "" && !(Array.isArray(v) && v.length === 0));
  if (!entries.length) return null;
  return (
    <dl className="mt-1 flex flex-wrap gap-x-4 gap-y-0.5 text-xs text-zinc-700 dark:text-zinc-300">
      {entries.map(([name, value]) => (
        <div key={name} className="flex min-w-0 gap-1">
          <dt className="muted">{name.replace(/_/g, " ")}:</dt>
          <dd className="break-all">{typeof value === "string" ? value : JSON.stringify(value)}</dd>
        </div>
      ))}
    </dl>
  );
}

function HoldControl({
  held,
  busy,
  history,
  onPlace,
  onLift,
}: {
  held: boolean;
  busy: string | null;
  history: DocumentHistory | null;
  onPlace: (reason: string) => Promise<boolean>;
  onLift: () => void;
}) {
  const [reason, setReason] = useState("");
  const lastHold = useMemo(
    () => [...(history?.steps ?? [])].reverse().find((s) => s.action === "Document.Held") ?? null,
    [history],
  );
  const heldReason = lastHold && typeof lastHold.changes.values.reason === "string" ? lastHold.changes.values.reason : "";

  function submit(event: FormEvent) {
    event.preventDefault();
    void onPlace(reason.trim()).then((ok) => {
      if (ok) setReason("");
    });
  }

  if (held) {
    return (
      <div>
        <p className="text-sm">
          Under legal hold{lastHold ? ` since ${formatDate(lastHold.occurred_at)}` : ""}
          {heldReason ? (
            <>
              : <q className="break-words">{heldReason}</q>
            </>
          ) : null}
          . It can be neither deleted nor erased, by anyone or by retention.
        </p>
        <button type="button" className="btn-secondary mt-2" disabled={busy !== null} onClick={onLift}>
          Lift legal hold
        </button>
      </div>
    );
  }
  return (
    <form onSubmit={submit}>
      <p className="text-sm">A legal hold keeps the document from being deleted or erased until it is lifted.</p>
      <div className="mt-2 flex flex-col gap-2 sm:flex-row sm:items-end">
        <div className="min-w-0 flex-1">
          <label htmlFor="hold-reason" className="label">
            Reason <span className="muted font-normal">(a matter or case reference)</span>
          </label>
          <input id="hold-reason" className="input" maxLength={500} value={reason} onChange={(e) => setReason(e.target.value)} />
        </div>
        <button type="submit" className="btn-secondary" disabled={busy !== null}>
          {busy === "hold" ? "Placing…" : "Place legal hold"}
        </button>
      </div>
    </form>
  );
}

/** Erase, after typing the file name exactly (it is irreversible). */
function EraseDialog({
  open,
  filename,
  busy,
  error,
  onCancel,
  onErase,
}: {
  open: boolean;
  filename: string;
  busy: boolean;
  error: unknown;
  onCancel: () => void;
  onErase: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const [typed, setTyped] = useState("");
  const id = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) {
      setTyped("");
      dialog.showModal();
    }
    if (!open && dialog.open) dialog.close();
  }, [open]);
  const matches = typed === filename;
  return (
    <dialog
      ref={ref}
      aria-labelledby={`${id}-title`}
      aria-describedby={`${id}-body`}
      onCancel={(event) => {
        event.preventDefault();
        if (!busy) onCancel();
      }}
      className="w-[min(32rem,calc(100vw-2rem))] rounded-lg border border-zinc-200 bg-white p-0 text-zinc-900 shadow-xl backdrop:bg-zinc-950/50 dark:border-zinc-800 dark:bg-zinc-900 dark:text-zinc-100"
    >
      {open ? (
        <form
          className="p-5"
          onSubmit={(event) => {
            event.preventDefault();
            if (matches && !busy) onErase();
          }}
        >
          <h2 id={`${id}-title`} className="text-base font-semibold">
            Erase this document for good?
          </h2>
          <div id={`${id}-body`} className="mt-2 space-y-2 text-sm text-zinc-700 dark:text-zinc-300">
            <p>
              This is <strong>irreversible</strong>: the document's key is destroyed, and its bytes, text, chunks,
              vectors and file name, and every answer that quoted it, can never be read again. It cannot be restored.
            </p>
            <p>
              To confirm, type the file name: <strong className="break-all font-mono text-zinc-900 dark:text-zinc-100">{filename}</strong>
            </p>
          </div>
          <label htmlFor={`${id}-name`} className="label mt-3">
            File name
          </label>
          <input
            id={`${id}-name`}
            className="input font-mono"
            value={typed}
            onChange={(e) => setTyped(e.target.value)}
            autoComplete="off"
            spellCheck={false}
            autoFocus
            aria-describedby={`${id}-state`}
          />
          <p id={`${id}-state`} className="muted mt-1 text-xs">
            {matches ? "The name matches." : "The Erase button is enabled once the name matches exactly."}
          </p>
          {error ? (
            <div className="mt-3">
              <ErrorNotice error={error} />
            </div>
          ) : null}
          <div className="mt-5 flex justify-end gap-2">
            <button type="button" className="btn-secondary" onClick={onCancel} disabled={busy}>
              Cancel
            </button>
            <button type="submit" className="btn-danger" disabled={!matches || busy}>
              {busy ? "Erasing…" : "Erase"}
            </button>
          </div>
        </form>
      ) : null}
    </dialog>
  );
}

/** The erasure certificate, readable, with its JSON to download; followed until complete. */
function Certificate({
  base,
  id,
  since,
  nameOf,
}: {
  base: string;
  id: string;
  since: number | null;
  nameOf: (actor: string) => string;
}) {
  const cert = useApi<SignedErasureCertificate>(`${base}/erasure`);
  const incomplete = cert.data !== null && !cert.data.certificate.complete;
  const notYet = cert.error instanceof ApiError && cert.error.status === 404;
  const [started] = useState(() => since ?? Date.now());
  // A fresh erasure: the read models confirm within seconds; look again for two minutes.
  useInterval(() => void cert.reload(), POLL_MS, (incomplete || notYet) && Date.now() - started < 120_000);

  const json = cert.data ? JSON.stringify(cert.data, null, 2) : "";
  const [url, setUrl] = useState<string | null>(null);
  useEffect(() => {
    if (!json) return;
    const made = URL.createObjectURL(new Blob([json], { type: "application/json" }));
    setUrl(made);
    return () => URL.revokeObjectURL(made);
  }, [json]);

  const c = cert.data?.certificate;
  return (
    <section aria-labelledby="certificate-heading" className="card mt-6 p-4 sm:p-5">
      <div className="flex flex-wrap items-start justify-between gap-2">
        <h2 id="certificate-heading" className="text-base font-semibold">
          Erasure certificate
        </h2>
        {url ? (
          <a className="btn-secondary" href={url} download={`erasure-${id}.json`}>
            <DownloadIcon />
            Download JSON
          </a>
        ) : null}
      </div>
      <div className="mt-3">
        {cert.error && !notYet ? <ErrorNotice error={cert.error} /> : null}
        {notYet ? <p className="muted text-sm">The erasure is being confirmed; the certificate follows in a moment.</p> : null}
        {cert.loading && !c ? <Spinner label="Loading the certificate" /> : null}
        {c ? (
          <>
            <p
              role="status"
              className={`rounded-md px-3 py-2 text-sm font-medium ${
                c.complete
                  ? "bg-emerald-50 text-emerald-900 dark:bg-emerald-950/40 dark:text-emerald-100"
                  : "bg-amber-50 text-amber-900 dark:bg-amber-950/40 dark:text-amber-100"
              }`}
            >
              {c.complete
                ? "Complete: every read model that keeps document content confirmed, and no key or stored file of it is left."
                : `Not complete yet: waiting for ${c.pending_read_models.length ? c.pending_read_models.join(", ") : "the key and files to go"}.`}
            </p>
            <dl className="mt-4 grid gap-x-6 gap-y-3 text-sm sm:grid-cols-2">
              <Fact label="Erased">{formatDate(c.erased_at)}</Fact>
              <Fact label="By">
                <span className="break-all" title={c.erased_by ?? ""}>
                  {c.erased_by ? nameOf(c.erased_by) : "—"}
                </span>
              </Fact>
              <Fact label="Cause">{c.cause ?? "—"}</Fact>
              <Fact label="Event position">{c.position ?? "—"}</Fact>
              <Fact label="Keys destroyed">
                {c.keys_destroyed.length ? (
                  <ul>
                    {c.keys_destroyed.map((k) => (
                      <li key={k} className="break-all font-mono text-xs">
                        {k}
                      </li>
                    ))}
                  </ul>
                ) : (
                  "none"
                )}
              </Fact>
              <Fact label="Left behind">
                {c.key_still_stored ? "the key is still stored" : "no key"} ·{" "}
                {c.blobs_still_stored ? plural(c.blobs_still_stored, "stored file") : "no stored file"}
              </Fact>
              <Fact label="Issued">{formatDate(c.issued_at)}</Fact>
              <Fact label="Format">
                <span className="font-mono text-xs">{c.format}</span>
              </Fact>
            </dl>
            <h3 className="mt-5 text-sm font-semibold">Read models that confirmed</h3>
            <ul className="mt-2 divide-y divide-zinc-200 rounded-md border border-zinc-200 dark:divide-zinc-800 dark:border-zinc-800">
              {c.read_models.map((m) => (
                <li key={m.name} className="px-3 py-2.5">
                  <p className="flex flex-wrap items-baseline justify-between gap-x-3">
                    <span className="font-medium">{m.name}</span>
                    <span className="muted text-xs">
                      confirmed {formatDate(m.confirmed_at)} at position {m.position.toLocaleString()}
                    </span>
                  </p>
                  <DetailList detail={m.detail} />
                </li>
              ))}
              {c.pending_read_models.map((name) => (
                <li key={name} className="px-3 py-2.5">
                  <p className="flex flex-wrap items-baseline justify-between gap-x-3">
                    <span className="font-medium">{name}</span>
                    <span className="text-xs text-amber-800 dark:text-amber-200">not confirmed yet</span>
                  </p>
                </li>
              ))}
            </ul>
            <details className="mt-4 text-sm">
              <summary className="link inline-block cursor-pointer rounded">Signature</summary>
              <dl className="mt-2 space-y-2">
                <Fact label="Key id">
                  <span className="font-mono text-xs">{cert.data?.key_id}</span>
                </Fact>
                <Fact label="Signature (Ed25519)">
                  <span className="break-all font-mono text-xs">{cert.data?.signature}</span>
                </Fact>
                <Fact label="Public key">
                  <pre className="whitespace-pre-wrap break-all font-mono text-xs">{cert.data?.public_key}</pre>
                </Fact>
              </dl>
              <p className="muted mt-2 text-xs">
                Check it offline: <code className="font-mono">kf documents verify-erasure erasure-{id}.json</code>
              </p>
            </details>
          </>
        ) : null}
      </div>
    </section>
  );
}

function DetailList({ detail }: { detail: unknown }) {
  if (!detail || typeof detail !== "object") return null;
  const entries = Object.entries(detail as Record<string, unknown>).filter(
    ([name]) => !["erased_at", "erased_by", "cause"].includes(name),
  );
  if (!entries.length) return null;
  return (
    <ul className="mt-1 flex flex-wrap gap-x-4 gap-y-0.5 text-xs text-zinc-700 dark:text-zinc-300">
      {entries.map(([name, value]) => (
        <li key={name} className="break-words">
          <span className="muted">{name.replace(/_/g, " ")}:</span> {typeof value === "string" ? value : JSON.stringify(value)}
        </li>
      ))}
    </ul>
  );
}
