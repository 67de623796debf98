import { useEffect, useId, useRef, useState, type ReactNode } from "react";

import { ApiError } from "../lib/api";
import type { DocumentStatus } from "../lib/types";
import { AlertIcon, CopyIcon } from "./icons";

export function Spinner({ label = "Loading" }: { label?: string }) {
  return (
    <span role="status" className="inline-flex items-center gap-2 text-zinc-600 dark:text-zinc-400">
      <span
        aria-hidden="true"
        className="h-4 w-4 animate-spin rounded-full border-2 border-zinc-300 border-t-indigo-600 motion-reduce:animate-none dark:border-zinc-700 dark:border-t-indigo-400"
      />
      <span className="sr-only">{label}</span>
    </span>
  );
}

export function messageOf(error: unknown): string {
  if (error instanceof ApiError) {
    if (error.retryAfter) return `${error.message} (try again in ${error.retryAfter} s)`;
    return error.message;
  }
  if (error instanceof Error) return error.message;
  return String(error);
}

export function ErrorNotice({ error, children }: { error: unknown; children?: ReactNode }) {
  if (!error) return null;
  return (
    <div
      role="alert"
      className="flex items-start gap-2 rounded-md border border-red-200 bg-red-50 px-3 py-2 text-sm text-red-800 dark:border-red-900/60 dark:bg-red-950/40 dark:text-red-200"
    >
      <AlertIcon className="mt-0.5 shrink-0" />
      <div className="min-w-0 flex-1">
        <p className="break-words">{messageOf(error)}</p>
        {children}
      </div>
    </div>
  );
}

const STATUS_STYLE: Record<DocumentStatus | "uploading" | "queued", string> = {
  queued: "bg-zinc-100 text-zinc-700 ring-zinc-200 dark:bg-zinc-800 dark:text-zinc-300 dark:ring-zinc-700",
  uploading: "bg-sky-50 text-sky-800 ring-sky-200 dark:bg-sky-950/50 dark:text-sky-200 dark:ring-sky-900",
  uploaded: "bg-sky-50 text-sky-800 ring-sky-200 dark:bg-sky-950/50 dark:text-sky-200 dark:ring-sky-900",
  parsed: "bg-violet-50 text-violet-800 ring-violet-200 dark:bg-violet-950/50 dark:text-violet-200 dark:ring-violet-900",
  chunked: "bg-amber-50 text-amber-800 ring-amber-200 dark:bg-amber-950/50 dark:text-amber-200 dark:ring-amber-900",
  embedded:
    "bg-emerald-50 text-emerald-800 ring-emerald-200 dark:bg-emerald-950/50 dark:text-emerald-200 dark:ring-emerald-900",
  failed: "bg-red-50 text-red-800 ring-red-200 dark:bg-red-950/50 dark:text-red-200 dark:ring-red-900",
  deleted: "bg-zinc-100 text-zinc-700 ring-zinc-200 dark:bg-zinc-800 dark:text-zinc-300 dark:ring-zinc-700",
  erased: "bg-zinc-100 text-zinc-700 ring-zinc-200 dark:bg-zinc-800 dark:text-zinc-300 dark:ring-zinc-700",
};

const STATUS_LABEL: Record<string, string> = {};

export function StatusBadge({ status }: { status: DocumentStatus | "uploading" | "queued" }) {
  return (
    <span
      className={`inline-flex items-center gap-1 whitespace-nowrap rounded-full px-2 py-0.5 text-xs font-medium ring-1 ring-inset ${STATUS_STYLE[status]}`}
    >
      {status === "uploaded" || status === "parsed" || status === "chunked" ? (
        <span aria-hidden="true" className="h-1.5 w-1.5 animate-pulse rounded-full bg-current motion-reduce:animate-none" />
      ) : null}
      {STATUS_LABEL[status] ?? status}
    </span>
  );
}

export function ProgressBar({ value, label }: { value: number; label: string }) {
  const pct = Math.max(0, Math.min(100, Math.round(value * 100)));
  return (
    <div
      role="progressbar"
      aria-label={label}
      aria-valuemin={0}
      aria-valuemax={100}
      aria-valuenow={pct}
      className="h-1.5 w-full overflow-hidden rounded-full bg-zinc-200 dark:bg-zinc-800"
    >
      <div
        className="h-full rounded-full bg-indigo-600 transition-[width] duration-200 dark:bg-indigo-400"
        style={{ width: `${pct}%` }}
      />
    </div>
  );
}

/** A modal confirmation on the native <dialog> (focus is kept inside; Escape cancels). */
export function ConfirmDialog({
  open,
  title,
  children,
  confirmLabel,
  danger = true,
  busy = false,
  error = null,
  onConfirm,
  onCancel,
}: {
  open: boolean;
  title: string;
  children: ReactNode;
  confirmLabel: string;
  danger?: boolean;
  busy?: boolean;
  error?: unknown;
  onConfirm: () => void;
  onCancel: () => void;
}) {
  const ref = useRef<HTMLDialogElement>(null);
  const titleId = useId();
  const bodyId = useId();
  useEffect(() => {
    const dialog = ref.current;
    if (!dialog) return;
    if (open && !dialog.open) dialog.showModal();
    if (!open && dialog.open) dialog.close();
  }, [open]);
  return (
    <dialog
      ref={ref}
      aria-labelledby={titleId}
      aria-describedby={bodyId}
      onCancel={(event) => {
        event.preventDefault();
        if (!busy) onCancel();
      }}
      className="w-[min(28rem,calc(100vw-2rem))] rounded-lg border border-zinc-200 bg-white p-0 text-zinc-900 shadow-xl backdrop:bg-zinc-950/50 dark:border-zinc-800 dark:bg-zinc-900 dark:text-zinc-100"
    >
      {open ? (
        <div className="p-5">
          <h2 id={titleId} className="text-base font-semibold">
            {title}
          </h2>
          <div id={bodyId} className="mt-2 text-sm text-zinc-700 dark:text-zinc-300">
            {children}
          </div>
          {error ? (
            <div className="mt-3">
              <ErrorNotice error={error} />
            </div>
          ) : null}
          <div className="mt-5 flex justify-end gap-2">
            <button type="button" className="btn-secondary" onClick={onCancel} disabled={busy} autoFocus>
              Cancel
            </button>
            <button
              type="button"
              className={danger ? "btn-danger" : "btn-primary"}
              onClick={onConfirm}
              disabled={busy}
            >
              {busy ? "Working…" : confirmLabel}
            </button>
          </div>
        </div>
      ) : null}
    </dialog>
  );
}

export function CopyButton({ text, label = "Copy" }: { text: string; label?: string }) {
  const [copied, setCopied] = useState(false);
  return (
    <button
      type="button"
      className="btn-secondary"
      onClick={() => {
        void navigator.clipboard?.writeText(text).then(() => {
          setCopied(true);
          window.setTimeout(() => setCopied(false), 2000);
        });
      }}
    >
      <CopyIcon />
      <span aria-live="polite">{copied ? "Copied" : label}</span>
    </button>
  );
}

export function EmptyState({ title, children }: { title: string; children?: ReactNode }) {
  return (
    <div className="rounded-lg border border-dashed border-zinc-300 px-6 py-10 text-center dark:border-zinc-700">
      <p className="font-medium text-zinc-900 dark:text-zinc-100">{title}</p>
      {children ? <div className="mt-1 text-sm text-zinc-600 dark:text-zinc-400">{children}</div> : null}
    </div>
  );
}

/** Set document.title for the page. */
export function useTitle(title: string): void {
  useEffect(() => {
    document.title = title ? `${title} · Knowledge Foundry` : "Knowledge Foundry";
  }, [title]);
}

/**
 * A wide table's horizontal scroller: a labelled region that can take focus, so that
 * keyboard users can scroll it too (axe: scrollable-region-focusable).
 */
export function TableScroll({ label, className = "", children }: { label: string; className?: string; children: ReactNode }) {
  return (
    <div role="region" aria-label={label} tabIndex={0} className={`relative overflow-x-auto ${className}`}>
      {children}
    </div>
  );
}

/** A column of a TableHead: its label, extra classes, and whether only screen readers read it
 * (an actions column). ``false`` or ``null`` leaves a column out. */
export type Column = { label: ReactNode; className?: string; srOnly?: boolean } | false | null;

/** The head row of a data table: every column a ``th scope="col"``. */
export function TableHead({ columns }: { columns: Column[] }) {
  return (
    <thead className="border-b border-zinc-200 bg-zinc-50 dark:border-zinc-800 dark:bg-zinc-900/60">
      <tr>
        {columns.map((column, index) =>
          column ? (
            <th key={index} scope="col" className={column.className ? `table-head ${column.className}` : "table-head"}>
              {column.srOnly ? <span className="sr-only">{column.label}</span> : column.label}
            </th>
          ) : null,
        )}
      </tr>
    </thead>
  );
}
