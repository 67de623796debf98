import { useCallback, useEffect, useMemo, useRef, useState, type DragEvent, type ReactNode } from "react";

import { ExternalIcon, TrashIcon, UploadIcon } from "../components/icons";
import {
  ConfirmDialog,
  EmptyState,
  ErrorNotice,
  ProgressBar,
  Spinner,
  StatusBadge,
  TableHead,
  messageOf,
  useTitle,
} from "../components/ui";
import { api, uploadDocument } from "../lib/api";
import { can, useAuth } from "../lib/auth";
import { contentHref, formatBytes, formatDate, plural } from "../lib/format";
import { Link } from "../lib/router";
import type { DocumentList, DocumentOut, DocumentStatus } from "../lib/types";

const FINAL: ReadonlySet<DocumentStatus> = new Set(["embedded", "failed", "deleted", "erased"]);
const STAGES: DocumentStatus[] = ["uploaded", "parsed", "chunked", "embedded"];
const POLL_MS = 2000;
const PAGE = 50;
const MAX_PAGE = 200;
const PARALLEL_UPLOADS = 2;
const ACCEPT =
  ".pdf,.docx,.txt,.text,.md,.markdown,.mdown,application/pdf,text/plain,text/markdown," +
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

type UploadState = "queued" | "uploading" | "stored" | "duplicate" | "failed" | "cancelled";

interface UploadItem {
  key: number;
  file: File;
  state: UploadState;
  sent: number;
  total: number;
  documentId: string | null;
  error: string | null;
  abort: (() => void) | null;
}

const STATUS_FILTERS: { value: "" | DocumentStatus; label: string }[] = [
  { value: "", label: "All statuses" },
  { value: "uploaded", label: "Uploaded" },
  { value: "parsed", label: "Parsed" },
  { value: "chunked", label: "Chunked" },
  { value: "embedded", label: "Embedded (ready)" },
  { value: "failed", label: "Failed" },
];
const TRASH_FILTERS: { value: "" | DocumentStatus; label: string }[] = [
  { value: "deleted", label: "In the trash" },
  { value: "erased", label: "Erased" },
];

export function DocumentsPage() {
  useTitle("Documents");
  const { me } = useAuth();
  const editor = can(me?.role, "edit");

  const [docs, setDocs] = useState<DocumentOut[]>([]);
  const [cursor, setCursor] = useState<string | null>(null);
  const [loading, setLoading] = useState(true);
  const [loadingMore, setLoadingMore] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<"" | DocumentStatus>("");
  const [name, setName] = useState("");
  const [uploads, setUploads] = useState<UploadItem[]>([]);
  const [toDelete, setToDelete] = useState<DocumentOut | null>(null);
  const [deleting, setDeleting] = useState(false);
  const [deleteError, setDeleteError] = useState<unknown>(null);
  const [announcement, setAnnouncement] = useState("");

  const minPosition = useRef<number | null>(null);
  const countRef = useRef(PAGE);
  const nextKey = useRef(1);

  const refresh = useCallback(
    async (signal?: AbortSignal) => {
      const limit = Math.min(MAX_PAGE, Math.max(PAGE, countRef.current));
      const position = minPosition.current;
      const page = await api.get<DocumentList>(
        "/v1/documents",
        { limit, status: status || undefined, min_position: position ?? undefined },
        signal,
      );
      if (position !== null && minPosition.current === position) minPosition.current = null;
      setDocs(page.items);
      setCursor(page.next_cursor);
      countRef.current = Math.max(PAGE, page.items.length);
      setError(null);
    },
    [status],
  );

  // First load, and again when the status filter changes.
  useEffect(() => {
    const controller = new AbortController();
    setLoading(true);
    countRef.current = PAGE;
    refresh(controller.signal)
      .catch((failure: unknown) => {
        if (!controller.signal.aborted) setError(failure);
      })
      .finally(() => {
        if (!controller.signal.aborted) setLoading(false);
      });
    return () => controller.abort();
  }, [refresh]);

  const stored = uploads.filter((u) => u.state === "stored" && u.documentId);
  const known = new Map(docs.map((d) => [d.id, d]));
  const processing =
    docs.some((d) => !FINAL.has(d.status)) ||
    (status === "" &&
      stored.some((u) => {
        const doc = known.get(u.documentId ?? "");
        return !doc || !FINAL.has(doc.status);
      }));

  // Poll every 2 s while anything is still being processed.
  useEffect(() => {
    if (!processing || loading) return;
    const controller = new AbortController();
    const timer = window.setInterval(() => {
      refresh(controller.signal).catch(() => undefined);
    }, POLL_MS);
    return () => {
      window.clearInterval(timer);
      controller.abort();
    };
  }, [processing, loading, refresh]);

  async function loadMore() {
    if (!cursor) return;
    setLoadingMore(true);
    try {
      const page = await api.get<DocumentList>("/v1/documents", {
        limit: PAGE,
        cursor,
        status: status || undefined,
      });
      setDocs((current) => {
        const seen = new Set(current.map((d) => d.id));
        const merged = [...current, ...page.items.filter((d) => !seen.has(d.id))];
        countRef.current = merged.length;
        return merged;
      });
      setCursor(page.next_cursor);
    } catch (failure) {
      setError(failure);
    } finally {
      setLoadingMore(false);
    }
  }

  // ------------------------------------------------------------------ uploads

  const patchUpload = useCallback((key: number, patch: Partial<UploadItem>) => {
    setUploads((items) => items.map((item) => (item.key === key ? { ...item, ...patch } : item)));
  }, []);

  function addFiles(files: FileList | File[]) {
    const list = Array.from(files);
    if (!list.length) return;
    const items = list.map<UploadItem>((file) => ({
      key: nextKey.current++,
      file,
      state: "queued",
      sent: 0,
      total: file.size,
      documentId: null,
      error: null,
      abort: null,
    }));
    setUploads((current) => [...items, ...current]);
    setAnnouncement(`${plural(items.length, "file")} added to the upload queue.`);
  }

  // Start queued uploads, a few at a time.
  useEffect(() => {
    const running = uploads.filter((u) => u.state === "uploading").length;
    const waiting = uploads.filter((u) => u.state === "queued").reverse();
    for (const item of waiting.slice(0, Math.max(0, PARALLEL_UPLOADS - running))) {
      const handle = uploadDocument(
        item.file,
        (sent, total) => patchUpload(item.key, { sent, total }),
        // All sent: the server may be keeping it already, so it can no longer be cancelled.
        () => patchUpload(item.key, { abort: null }),
      );
      patchUpload(item.key, { state: "uploading", abort: handle.abort });
      handle.promise
        .then(({ body }) => {
          minPosition.current = Math.max(minPosition.current ?? 0, body.position);
          patchUpload(item.key, {
            state: body.duplicate ? "duplicate" : "stored",
            documentId: body.id,
            sent: item.file.size,
            abort: null,
          });
          setAnnouncement(
            body.duplicate
              ? `${item.file.name} was already uploaded.`
              : `${item.file.name} uploaded; processing.`,
          );
          refresh().catch(() => undefined);
        })
        .catch((failure: unknown) => {
          const cancelled = failure instanceof DOMException && failure.name === "AbortError";
          patchUpload(item.key, {
            state: cancelled ? "cancelled" : "failed",
            error: cancelled ? null : messageOf(failure),
            abort: null,
          });
          if (!cancelled) setAnnouncement(`${item.file.name} failed: ${messageOf(failure)}`);
        });
    }
  }, [uploads, patchUpload, refresh]);

  const [dragging, setDragging] = useState(false);
  const dragDepth = useRef(0);
  const inputRef = useRef<HTMLInputElement>(null);

  function onDrop(event: DragEvent) {
    event.preventDefault();
    dragDepth.current = 0;
    setDragging(false);
    if (event.dataTransfer.files.length) addFiles(event.dataTransfer.files);
  }

  // ------------------------------------------------------------------ delete

  async function confirmDelete() {
    if (!toDelete) return;
    setDeleting(true);
    setDeleteError(null);
    try {
      const accepted = await api.del<{ id: string; position: number }>(
        `/v1/documents/${encodeURIComponent(toDelete.id)}`,
      );
      minPosition.current = Math.max(minPosition.current ?? 0, accepted.position);
      setDocs((current) => current.filter((d) => d.id !== toDelete.id));
      setAnnouncement(`${toDelete.filename} deleted.`);
      setToDelete(null);
      refresh().catch(() => undefined);
    } catch (failure) {
      setDeleteError(failure);
    } finally {
      setDeleting(false);
    }
  }

  const needle = name.trim().toLowerCase();
  const shown = useMemo(
    () => (needle ? docs.filter((d) => d.filename.toLowerCase().includes(needle)) : docs),
    [docs, needle],
  );
  const finishedUploads = uploads.filter((u) => u.state !== "queued" && u.state !== "uploading");

  return (
    <div className="mx-auto max-w-6xl px-4 py-6 sm:px-6 lg:py-8">
      <div className="flex flex-wrap items-end justify-between gap-3">
        <div>
          <h1 className="page-title">Documents</h1>
          <p className="muted mt-1">
            PDF, Word (DOCX), text and Markdown files are parsed, chunked and embedded for search and chat.
          </p>
        </div>
      </div>

      <p className="sr-only" role="status" aria-live="polite">
        {announcement}
      </p>

      {editor ? (
        <section aria-labelledby="upload-heading" className="mt-6">
          <h2 id="upload-heading" className="sr-only">
            Upload
          </h2>
          <div
            onDragEnter={(e) => {
              e.preventDefault();
              dragDepth.current += 1;
              setDragging(true);
            }}
            onDragOver={(e) => e.preventDefault()}
            onDragLeave={() => {
              dragDepth.current = Math.max(0, dragDepth.current - 1);
              if (dragDepth.current === 0) setDragging(false);
            }}
            onDrop={onDrop}
            className={`flex flex-col items-center justify-center gap-2 rounded-lg border-2 border-dashed px-4 py-8 text-center transition-colors ${
              dragging
                ? "border-indigo-500 bg-indigo-50 dark:border-indigo-400 dark:bg-indigo-500/10"
                : "border-zinc-300 bg-zinc-50/60 dark:border-zinc-700 dark:bg-zinc-900/40"
            }`}
          >
            <UploadIcon width={24} height={24} className="text-zinc-500 dark:text-zinc-400" />
            <p className="font-medium text-zinc-900 dark:text-zinc-100">Drop files here to upload</p>
            <p className="muted text-xs">or</p>
            <button type="button" className="btn-secondary" onClick={() => inputRef.current?.click()}>
              Choose files…
            </button>
            <input
              ref={inputRef}
              id="file-input"
              type="file"
              multiple
              accept={ACCEPT}
              className="sr-only"
              tabIndex={-1}
              aria-label="Choose files to upload"
              onChange={(e) => {
                if (e.target.files) addFiles(e.target.files);
                e.target.value = "";
              }}
            />
          </div>

          {uploads.length ? (
            <div className="card mt-4">
              <div className="flex items-center justify-between border-b border-zinc-200 px-4 py-2 dark:border-zinc-800">
                <h3 className="text-sm font-medium">Uploads</h3>
                {finishedUploads.length ? (
                  <button
                    type="button"
                    className="btn-ghost text-xs"
                    onClick={() =>
                      setUploads((items) => items.filter((u) => u.state === "queued" || u.state === "uploading"))
                    }
                  >
                    Clear finished
                  </button>
                ) : null}
              </div>
              <ul className="divide-y divide-zinc-200 dark:divide-zinc-800">
                {uploads.map((item) => (
                  <UploadRow key={item.key} item={item} doc={item.documentId ? known.get(item.documentId) : undefined} />
                ))}
              </ul>
            </div>
          ) : null}
        </section>
      ) : null}

      <section aria-labelledby="list-heading" className="mt-8">
        <div className="flex flex-col gap-3 sm:flex-row sm:items-end sm:justify-between">
          <h2 id="list-heading" className="text-base font-semibold">
            Library
          </h2>
          <div className="flex flex-col gap-2 sm:flex-row">
            <div>
              <label htmlFor="name-filter" className="sr-only">
                Filter by name
              </label>
              <input
                id="name-filter"
                type="search"
                placeholder="Filter by name"
                className="input sm:w-56"
                value={name}
                onChange={(e) => setName(e.target.value)}
              />
            </div>
            <div>
              <label htmlFor="status-filter" className="sr-only">
                Filter by status
              </label>
              <select
                id="status-filter"
                className="input sm:w-44"
                value={status}
                onChange={(e) => setStatus(e.target.value as "" | DocumentStatus)}
              >
                {(editor ? [...STATUS_FILTERS, ...TRASH_FILTERS] : STATUS_FILTERS).map((f) => (
                  <option key={f.value} value={f.value}>
                    {f.label}
                  </option>
                ))}
              </select>
            </div>
          </div>
        </div>

        <div className="mt-3">
          {error ? <ErrorNotice error={error} /> : null}
          {loading ? (
            <div className="py-10 text-center">
              <Spinner label="Loading documents" />
            </div>
          ) : shown.length === 0 ? (
            <EmptyState title={docs.length ? "No document matches" : "No documents yet"}>
              {docs.length
                ? "Change the filters to see more."
                : editor
                  ? "Upload files above to get started."
                  : "Documents uploaded by editors appear here."}
            </EmptyState>
          ) : (
            <div className="card overflow-hidden">
              <table className="w-full text-sm">
                <caption className="sr-only">Documents, newest first</caption>
                <TableHead
                  columns={[
                    { label: "Name" },
                    { label: "Status", className: "hidden sm:table-cell" },
                    { label: "Contents", className: "hidden md:table-cell" },
                    { label: "Uploaded", className: "hidden sm:table-cell" },
                    { label: "Actions", className: "text-right", srOnly: true },
                  ]}
                />
                <tbody className="divide-y divide-zinc-200 dark:divide-zinc-800">
                  {shown.map((doc) => (
                    <DocumentRow
                      key={doc.id}
                      doc={doc}
                      canDelete={editor}
                      onDelete={() => {
                        setDeleteError(null);
                        setToDelete(doc);
                      }}
                    />
                  ))}
                </tbody>
              </table>
            </div>
          )}
          {cursor && !loading ? (
            <div className="mt-4 text-center">
              <button type="button" className="btn-secondary" onClick={() => void loadMore()} disabled={loadingMore}>
                {loadingMore ? "Loading…" : "Load more"}
              </button>
            </div>
          ) : null}
        </div>
      </section>

      <ConfirmDialog
        open={toDelete !== null}
        title="Delete document?"
        confirmLabel="Delete"
        busy={deleting}
        error={deleteError}
        onConfirm={() => void confirmDelete()}
        onCancel={() => setToDelete(null)}
      >
        <p>
          <strong className="break-all font-medium text-zinc-900 dark:text-zinc-100">{toDelete?.filename}</strong>{" "}
          will be removed from search and chat. An administrator can restore it from the trash until it is
          erased.
        </p>
      </ConfirmDialog>
    </div>
  );
}

function Pipeline({ status }: { status: DocumentStatus }) {
  const reached = STAGES.indexOf(status);
  return (
    <ol className="mt-1.5 flex items-center gap-1" aria-label={`Processing: step ${reached + 1} of ${STAGES.length}`}>
      {STAGES.map((stage, i) => (
        <li
          key={stage}
          title={stage}
          className={`h-1 w-6 rounded-full ${
            i <= reached ? "bg-indigo-600 dark:bg-indigo-400" : "bg-zinc-200 dark:bg-zinc-700"
          }`}
        >
          <span className="sr-only">
            {stage}
            {i <= reached ? " (done)" : ""}
          </span>
        </li>
      ))}
    </ol>
  );
}

function DocumentRow({
  doc,
  canDelete,
  onDelete,
}: {
  doc: DocumentOut;
  canDelete: boolean;
  onDelete: () => void;
}) {
  const inProgress = !FINAL.has(doc.status);
  const status = (
    <>
      <StatusBadge status={doc.status} />
      {inProgress ? <Pipeline status={doc.status} /> : null}
      {doc.failure ? (
        <p className="mt-1 whitespace-normal text-xs text-red-700 dark:text-red-300 sm:max-w-[16rem]">
          {doc.failure.stage}: {doc.failure.reason || doc.failure.code}
        </p>
      ) : null}
    </>
  );
  return (
    <tr className="hover:bg-zinc-50/70 dark:hover:bg-zinc-800/30">
      <td className="table-cell w-full max-w-0">
        <p className="break-words font-medium sm:truncate" title={doc.filename}>
          <Link
            to={`/documents/${doc.id}`}
            className="text-zinc-900 underline-offset-2 hover:underline dark:text-zinc-100"
          >
            {doc.status === "erased" ? "Erased document" : doc.filename}
          </Link>
        </p>
        <p className="muted mt-0.5 text-xs">
          {formatBytes(doc.size_bytes)}
          <span className="sm:hidden"> · {formatDate(doc.uploaded_at)}</span>
          {doc.legal_hold ? " · legal hold" : ""}
        </p>
        <div className="mt-2 sm:hidden">{status}</div>
      </td>
      <td className="table-cell hidden whitespace-nowrap sm:table-cell">{status}</td>
      <td className="table-cell muted hidden whitespace-nowrap md:table-cell">
        {doc.page_count !== null ? plural(doc.page_count, "page") : "—"}
        {doc.chunk_count !== null ? <span className="block text-xs">{plural(doc.chunk_count, "chunk")}</span> : null}
      </td>
      <td className="table-cell muted hidden whitespace-nowrap sm:table-cell">{formatDate(doc.uploaded_at)}</td>
      <td className="table-cell whitespace-nowrap text-right">
        <div className="flex justify-end gap-1">
          {doc.status !== "deleted" && doc.status !== "erased" ? (
            <a
              className="btn-icon"
              href={contentHref(doc.id, null)}
              target="_blank"
              rel="noopener"
              aria-label={`Open ${doc.filename}`}
              title="Open the original file"
            >
              <ExternalIcon />
            </a>
          ) : null}
          {canDelete && doc.status !== "deleted" && doc.status !== "erased" ? (
            <button
              type="button"
              className="btn-icon hover:text-red-700 dark:hover:text-red-300"
              onClick={onDelete}
              aria-label={`Delete ${doc.filename}`}
              title="Delete"
              disabled={doc.legal_hold}
            >
              <TrashIcon />
            </button>
          ) : null}
        </div>
      </td>
    </tr>
  );
}

function UploadRow({ item, doc }: { item: UploadItem; doc: DocumentOut | undefined }) {
  const fraction = item.total > 0 ? item.sent / item.total : 0;
  let detail: ReactNode;
  switch (item.state) {
    case "queued":
      detail = <span className="muted">Waiting…</span>;
      break;
    case "uploading":
      detail = item.abort ? (
        <span className="muted">
          {formatBytes(item.sent)} of {formatBytes(item.total)} sent
        </span>
      ) : (
        <span className="muted">All sent · the server is storing it</span>
      );
      break;
    case "stored":
      detail = doc ? (
        doc.failure ? (
          <span className="text-red-700 dark:text-red-300">
            Processing failed ({doc.failure.stage}): {doc.failure.reason || doc.failure.code}
          </span>
        ) : (
          <span className="muted">{doc.status === "embedded" ? "Uploaded and ready" : "Uploaded · processing"}</span>
        )
      ) : (
        <span className="muted">Uploaded · processing</span>
      );
      break;
    case "duplicate":
      detail = <span className="text-amber-800 dark:text-amber-200">Already uploaded: identical file in the library</span>;
      break;
    case "failed":
      detail = <span className="text-red-700 dark:text-red-300">{item.error}</span>;
      break;
    case "cancelled":
      detail = <span className="muted">Cancelled</span>;
      break;
  }
  return (
    <li className="px-4 py-3">
      <div className="flex items-start justify-between gap-3">
        <div className="min-w-0 flex-1">
          <p className="truncate font-medium" title={item.file.name}>
            {item.file.name}
          </p>
          <p className="mt-0.5 text-xs">
            {formatBytes(item.file.size)} · {detail}
          </p>
        </div>
        <div className="flex shrink-0 items-center gap-2">
          {item.state === "stored" ? (
            <StatusBadge status={doc?.status ?? "uploaded"} />
          ) : item.state === "uploading" || item.state === "queued" ? (
            <StatusBadge status={item.state} />
          ) : null}
          {item.state === "uploading" && item.abort ? (
            <button type="button" className="btn-ghost text-xs" onClick={item.abort}>
              Cancel<span className="sr-only"> upload of {item.file.name}</span>
            </button>
          ) : null}
        </div>
      </div>
      {item.state === "uploading" || item.state === "queued" ? (
        <div className="mt-2">
          <ProgressBar value={fraction} label={`Upload of ${item.file.name}`} />
        </div>
      ) : null}
    </li>
  );
}
