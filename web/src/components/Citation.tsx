import { useEffect, useId, useLayoutEffect, useMemo, useRef, useState } from "react";

import { contentHref } from "../lib/format";
import type { Citation } from "../lib/types";
import { CloseIcon, ExternalIcon } from "./icons";

const WIDTH = 352;
const MIN_QUOTE = 12;

/** The last sentence (or quoted phrase) of the answer text before a marker. */
function quoteOf(before: string): string {
  const line = before.split("\n").pop() ?? "";
  const quoted = /[“"]([^“”"]+)[”"]\s*$/.exec(line.trim());
  if (quoted?.[1]) return quoted[1].trim();
  const sentences = line.split(/(?<=[.!?])\s+/).filter((x) => x.trim());
  return (sentences.pop() ?? "").replace(/^[\s“"'(]+|[\s”"')]+$/g, "").trim();
}

/** Where `needle` is in `text`, ignoring case and runs of whitespace: [start, end) or null. */
export function findLoose(text: string, needle: string): [number, number] | null {
  const want = needle.toLowerCase().replace(/\s+/g, " ").trim();
  if (want.length < MIN_QUOTE) return null;
  let flat = "";
  const at: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const ch = text[i] ?? "";
    if (/\s/.test(ch)) {
      if (flat.endsWith(" ") || flat === "") continue;
      flat += " ";
    } else {
      flat += ch.toLowerCase();
    }
    at.push(i);
  }
  const found = flat.indexOf(want);
  if (found < 0) return null;
  const start = at[found] ?? 0;
  const end = (at[found + want.length - 1] ?? start) + 1;
  return [start, end];
}

/** The passage's part the answer quoted: the whole quote, else its longest clause found. */
function quotedRange(text: string, before: string): [number, number] | null {
  const quote = quoteOf(before);
  if (!quote) return null;
  const whole = findLoose(text, quote.replace(/[.…]+$/, ""));
  if (whole) return whole;
  const clauses = quote
    .split(/[,;:.…]\s+|\s+[-–—]\s+/)
    .map((c) => c.trim())
    .sort((a, b) => b.length - a.length);
  for (const clause of clauses) {
    const found = findLoose(text, clause);
    if (found) return found;
  }
  return null;
}

/** An inline [n] marker: a button that opens the cited passage in a popover. */
export function CitationButton({ citation, quoted = "" }: { citation: Citation; quoted?: string }) {
  const [open, setOpen] = useState(false);
  const [place, setPlace] = useState<{ top: number; left: number; width: number } | null>(null);
  const button = useRef<HTMLButtonElement>(null);
  const panel = useRef<HTMLDivElement>(null);
  const passage = useRef<HTMLQuoteElement>(null);
  const mark = useRef<HTMLElement>(null);
  const range = useMemo(
    () => (citation.text !== null ? quotedRange(citation.text, quoted) : null),
    [citation.text, quoted],
  );
  const id = useId();
  const titleId = `${id}-title`;

  useLayoutEffect(() => {
    if (!open || !button.current) return;
    const rect = button.current.getBoundingClientRect();
    const width = Math.min(WIDTH, window.innerWidth - 16);
    const left = Math.min(Math.max(8, rect.left - 12), window.innerWidth - width - 8);
    const height = panel.current?.offsetHeight ?? 240;
    const below = rect.bottom + 6;
    const top = below + height > window.innerHeight - 8 && rect.top - height - 6 > 8 ? rect.top - height - 6 : below;
    setPlace({ top, left, width });
  }, [open]);

  useLayoutEffect(() => {
    const box = passage.current;
    const marked = mark.current;
    if (!open || !box || !marked) return;
    box.scrollTop = Math.max(0, marked.offsetTop - box.offsetTop - 24);
  }, [open, place]);

  useEffect(() => {
    if (!open) return;
    panel.current?.focus();
    const onKey = (event: KeyboardEvent) => {
      if (event.key === "Escape") {
        setOpen(false);
        button.current?.focus();
      }
    };
    const onPointer = (event: PointerEvent) => {
      const target = event.target as Node;
      if (!panel.current?.contains(target) && !button.current?.contains(target)) setOpen(false);
    };
    const onMove = () => setOpen(false);
    window.addEventListener("keydown", onKey);
    window.addEventListener("pointerdown", onPointer);
    window.addEventListener("resize", onMove);
    return () => {
      window.removeEventListener("keydown", onKey);
      window.removeEventListener("pointerdown", onPointer);
      window.removeEventListener("resize", onMove);
    };
  }, [open]);

  const where = citation.page !== null ? `, page ${citation.page}` : "";
  return (
    <>
      <button
        ref={button}
        type="button"
        className="mx-0.5 inline-flex h-[1.15rem] min-w-[1.15rem] items-center justify-center rounded bg-indigo-100 px-1 align-[0.1em] text-[0.7rem] font-semibold leading-none text-indigo-800 hover:bg-indigo-200 dark:bg-indigo-500/20 dark:text-indigo-200 dark:hover:bg-indigo-500/30"
        aria-label={`Source ${citation.n}: ${citation.filename}${where}`}
        aria-expanded={open}
        aria-controls={open ? id : undefined}
        onClick={() => setOpen((v) => !v)}
      >
        {citation.n}
      </button>
      {open ? (
        <div
          ref={panel}
          id={id}
          role="dialog"
          aria-labelledby={titleId}
          tabIndex={-1}
          style={
            place
              ? { top: place.top, left: place.left, width: place.width }
              : { top: -9999, left: 0, width: Math.min(WIDTH, window.innerWidth - 16) }
          }
          className="fixed z-40 rounded-lg border border-zinc-200 bg-white p-3 text-left text-sm font-normal text-zinc-800 shadow-xl focus:outline-none dark:border-zinc-700 dark:bg-zinc-900 dark:text-zinc-200"
        >
          <div className="flex items-start justify-between gap-2">
            <p id={titleId} className="min-w-0 font-medium text-zinc-900 dark:text-zinc-50">
              <span className="mr-1 text-indigo-700 dark:text-indigo-300">[{citation.n}]</span>
              <span className="break-words">{citation.filename}</span>
              {citation.page !== null ? (
                <span className="muted block text-xs font-normal">Page {citation.page}</span>
              ) : null}
            </p>
            <button
              type="button"
              className="btn-icon -mr-1 -mt-1 h-7 w-7"
              aria-label="Close source"
              onClick={() => {
                setOpen(false);
                button.current?.focus();
              }}
            >
              <CloseIcon />
            </button>
          </div>
          {citation.text !== null ? (
            <blockquote
              ref={passage}
              tabIndex={0}
              aria-label="Cited passage"
              className="mt-2 max-h-56 overflow-y-auto whitespace-pre-wrap border-l-2 border-zinc-300 pl-3 text-[0.8rem] leading-relaxed text-zinc-700 dark:border-zinc-600 dark:text-zinc-300">
              {range ? (
                <>
                  {citation.text.slice(0, range[0])}
                  <mark
                    ref={mark}
                    className="rounded-sm bg-amber-100 px-0.5 text-zinc-900 dark:bg-amber-400/25 dark:text-zinc-50"
                  >
                    {citation.text.slice(range[0], range[1])}
                  </mark>
                  {citation.text.slice(range[1])}
                </>
              ) : (
                citation.text
              )}
            </blockquote>
          ) : (
            <p className="muted mt-2 text-xs italic">The passage is no longer available: its document was deleted.</p>
          )}
          {citation.text !== null ? (
            <a
              className="link mt-3 inline-flex items-center gap-1 text-sm"
              href={contentHref(citation.document_id, citation.page)}
              target="_blank"
              rel="noopener"
            >
              {citation.page !== null ? `Open page ${citation.page}` : "Open document"}
              <ExternalIcon />
              <span className="sr-only"> (opens in a new tab)</span>
            </a>
          ) : null}
        </div>
      ) : null}
    </>
  );
}
