import { useEffect, useRef, useState, type FormEvent } from "react";

import { ExternalIcon, SearchIcon } from "../components/icons";
import { EmptyState, ErrorNotice, Spinner, useTitle } from "../components/ui";
import { api } from "../lib/api";
import { contentHref, formatScore } from "../lib/format";
import { Snippet } from "../lib/highlight";
import { navigate, useLocation } from "../lib/router";
import type { SearchHit, SearchMode, SearchResponse } from "../lib/types";

const MODES: { value: SearchMode; label: string; hint: string }[] = [
  { value: "hybrid", label: "Hybrid", hint: "Meaning and keywords, rank-fused" },
  { value: "vector", label: "Semantic", hint: "By meaning (vector similarity)" },
  { value: "keyword", label: "Keyword", hint: "BM25 keyword ranking" },
  { value: "exact", label: "Exact", hint: 'Full text: "quoted phrases", or, -term; every match' },
];
const K = 10;

function isMode(value: string | null): value is SearchMode {
  return value === "hybrid" || value === "vector" || value === "keyword" || value === "exact";
}

export function SearchPage() {
  useTitle("Search");
  const { search } = useLocation();
  const q = search.get("q") ?? "";
  const modeParam = search.get("mode");
  const mode: SearchMode = isMode(modeParam) ? modeParam : "hybrid";

  const [draft, setDraft] = useState(q);
  const [draftMode, setDraftMode] = useState<SearchMode>(mode);
  const [results, setResults] = useState<SearchHit[] | null>(null);
  const [took, setTook] = useState<number | null>(null);
  const [loading, setLoading] = useState(false);
  const [moreLoading, setMoreLoading] = useState(false);
  const [hasMore, setHasMore] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const headingRef = useRef<HTMLHeadingElement>(null);

  useEffect(() => {
    setDraft(q);
    setDraftMode(mode);
  }, [q, mode]);

  // The query lives in the address (?q=…&mode=…): searches can be linked and go back.
  useEffect(() => {
    if (!q.trim()) {
      setResults(null);
      setError(null);
      return;
    }
    const controller = new AbortController();
    setLoading(true);
    setError(null);
    api
      .get<SearchResponse>("/v1/search", { q, mode, k: K }, controller.signal)
      .then((answer) => {
        setResults(answer.results);
        setTook(answer.took_ms);
        setHasMore(mode === "exact" && answer.results.length === K);
      })
      .catch((failure: unknown) => {
        if (!controller.signal.aborted) {
          setResults(null);
          setError(failure);
        }
      })
      .finally(() => {
        if (!controller.signal.aborted) setLoading(false);
      });
    return () => controller.abort();
  }, [q, mode]);

  function submit(event: FormEvent) {
    event.preventDefault();
    const query = draft.trim();
    if (!query) return;
    navigate(`/search?${new URLSearchParams({ q: query, mode: draftMode }).toString()}`);
  }

  function changeMode(next: SearchMode) {
    setDraftMode(next);
    if (q.trim()) navigate(`/search?${new URLSearchParams({ q, mode: next }).toString()}`, { replace: true });
  }

  async function more() {
    if (!results) return;
    setMoreLoading(true);
    try {
      const answer = await api.get<SearchResponse>("/v1/search", { q, mode, k: K, offset: results.length });
      setResults([...results, ...answer.results]);
      setHasMore(answer.results.length === K);
    } catch (failure) {
      setError(failure);
    } finally {
      setMoreLoading(false);
    }
  }

  return (
    <div className="mx-auto max-w-4xl px-4 py-6 sm:px-6 lg:py-8">
      <h1 className="page-title">Search</h1>
      <p className="muted mt-1">Find passages across every document in your workspace.</p>

      <form role="search" onSubmit={submit} className="mt-6 space-y-3">
        <div className="flex gap-2">
          <div className="relative flex-1">
            <label htmlFor="q" className="sr-only">
              Search query
            </label>
            <SearchIcon className="pointer-events-none absolute left-3 top-1/2 -translate-y-1/2 text-zinc-500" />
            <input
              id="q"
              type="search"
              className="input py-2 pl-9"
              placeholder="Search your documents"
              value={draft}
              onChange={(e) => setDraft(e.target.value)}
              autoFocus={!q}
            />
          </div>
          <button type="submit" className="btn-primary px-4" disabled={!draft.trim()}>
            Search
          </button>
        </div>
        <fieldset>
          <legend className="sr-only">Search mode</legend>
          <div className="inline-flex flex-wrap rounded-md border border-zinc-300 bg-zinc-50 p-0.5 dark:border-zinc-700 dark:bg-zinc-900">
            {MODES.map((m) => (
              <label
                key={m.value}
                title={m.hint}
                className={`cursor-pointer rounded px-3 py-1 text-sm font-medium transition-colors has-[:focus-visible]:ring-2 has-[:focus-visible]:ring-indigo-500 ${
                  draftMode === m.value
                    ? "bg-white text-zinc-900 shadow-sm dark:bg-zinc-700 dark:text-zinc-50"
                    : "text-zinc-600 hover:text-zinc-900 dark:text-zinc-400 dark:hover:text-zinc-100"
                }`}
              >
                <input
                  type="radio"
                  name="mode"
                  value={m.value}
                  checked={draftMode === m.value}
                  onChange={() => changeMode(m.value)}
                  className="sr-only"
                />
                {m.label}
              </label>
            ))}
          </div>
          <p className="muted mt-1.5 text-xs">{MODES.find((m) => m.value === draftMode)?.hint}</p>
        </fieldset>
      </form>

      <section aria-labelledby="results-heading" className="mt-6" aria-busy={loading}>
        <h2 id="results-heading" ref={headingRef} className="sr-only">
          Results
        </h2>
        {error ? <ErrorNotice error={error} /> : null}
        {loading ? (
          <div className="py-10 text-center">
            <Spinner label="Searching" />
          </div>
        ) : results === null ? null : results.length === 0 ? (
          <EmptyState title="No results">Try other words, or another mode.</EmptyState>
        ) : (
          <>
            <p className="muted mb-3 text-xs" role="status">
              {results.length} result{results.length === 1 ? "" : "s"}
              {took !== null ? ` · ${Math.round(took)} ms` : ""}
            </p>
            <ol className="space-y-3">
              {results.map((hit) => (
                <ResultCard key={`${hit.document_id}:${hit.chunk_index}`} hit={hit} mode={mode} />
              ))}
            </ol>
            {hasMore ? (
              <div className="mt-4 text-center">
                <button type="button" className="btn-secondary" onClick={() => void more()} disabled={moreLoading}>
                  {moreLoading ? "Loading…" : "More matches"}
                </button>
              </div>
            ) : null}
          </>
        )}
      </section>
    </div>
  );
}

function ResultCard({ hit, mode }: { hit: SearchHit; mode: SearchMode }) {
  const pages =
    hit.page === null
      ? null
      : hit.page_end !== null && hit.page_end !== hit.page
        ? `pages ${hit.page}–${hit.page_end}`
        : `page ${hit.page}`;
  const ranks = [
    hit.ranks.vector !== null ? `semantic #${hit.ranks.vector}` : null,
    hit.ranks.keyword !== null ? `keyword #${hit.ranks.keyword}` : null,
  ].filter(Boolean);
  return (
    <li className="card p-4">
      <div className="flex flex-wrap items-baseline justify-between gap-x-3 gap-y-1">
        <h3 className="min-w-0 truncate font-medium text-zinc-900 dark:text-zinc-100" title={hit.filename}>
          {hit.filename}
        </h3>
        <p className="muted text-xs tabular-nums">
          {pages ? `${pages} · ` : ""}score {formatScore(hit.score)}
          {mode === "hybrid" && ranks.length ? ` (${ranks.join(", ")})` : ""}
        </p>
      </div>
      <p className="mt-2 leading-relaxed text-zinc-800 dark:text-zinc-200">
        <Snippet snippet={hit.snippet} />
      </p>
      <p className="mt-3">
        <a
          className="link inline-flex items-center gap-1 text-sm"
          href={contentHref(hit.document_id, hit.page)}
          target="_blank"
          rel="noopener"
        >
          {hit.page !== null ? `Open page ${hit.page}` : "Open document"}
          <ExternalIcon />
          <span className="sr-only"> of {hit.filename} (opens in a new tab)</span>
        </a>
      </p>
    </li>
  );
}
