// Search snippets arrive HTML-escaped with matches in <mark>…</mark> (projections/highlight.py).
// They are parsed here into text and marked runs, never injected as HTML.

import type { ReactNode } from "react";

const ENTITIES: Record<string, string> = {
  amp: "&",
  lt: "<",
  gt: ">",
  quot: '"',
  apos: "'",
  nbsp: "\u00a0",
};

/** Decode the character references html.escape and Markdown text can contain. */
export function decodeEntities(text: string): string {
  return text.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g, (whole, name: string) => {
    if (name.startsWith("#x") || name.startsWith("#X")) {
      const code = parseInt(name.slice(2), 16);
      return validCodePoint(code) ? String.fromCodePoint(code) : whole;
    }
    if (name.startsWith("#")) {
      const code = parseInt(name.slice(1), 10);
      return validCodePoint(code) ? String.fromCodePoint(code) : whole;
    }
    return ENTITIES[name] ?? whole;
  });
}

function validCodePoint(code: number): boolean {
  return Number.isInteger(code) && code > 0 && code <= 0x10ffff && !(code >= 0xd800 && code <= 0xdfff);
}

export interface SnippetPart {
  text: string;
  marked: boolean;
}

/** Split an escaped snippet into runs; any other markup stays visible as text. */
export function parseSnippet(snippet: string): SnippetPart[] {
  const parts: SnippetPart[] = [];
  const pattern = /<mark>([\s\S]*?)<\/mark>/g;
  let cursor = 0;
  for (let found = pattern.exec(snippet); found; found = pattern.exec(snippet)) {
    if (found.index > cursor) {
      parts.push({ text: decodeEntities(snippet.slice(cursor, found.index)), marked: false });
    }
    parts.push({ text: decodeEntities(found[1] ?? ""), marked: true });
    cursor = found.index + found[0].length;
  }
  if (cursor < snippet.length) {
    parts.push({ text: decodeEntities(snippet.slice(cursor)), marked: false });
  }
  return parts;
}

export function Snippet({ snippet }: { snippet: string }): ReactNode {
  return parseSnippet(snippet).map((part, i) =>
    part.marked ? (
      <mark
        key={i}
        className="rounded-sm bg-amber-200 px-0.5 text-zinc-900 dark:bg-amber-400/30 dark:text-amber-100"
      >
        {part.text}
      </mark>
    ) : (
      <span key={i}>{part.text}</span>
    ),
  );
}
