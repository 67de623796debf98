import { useCallback, useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";

import { CitationButton } from "../components/Citation";
import { ChatIcon, CloseIcon, MenuIcon, PlusIcon, RetryIcon, SendIcon, StopIcon, TrashIcon } from "../components/icons";
import { ConfirmDialog, ErrorNotice, Spinner, messageOf, useTitle } from "../components/ui";
import { ApiError, api, askStreaming } from "../lib/api";
import { useAuth } from "../lib/auth";
import { formatCost, formatRelative } from "../lib/format";
import { Markdown } from "../lib/markdown";
import { Link, navigate } from "../lib/router";
import type {
  AnswerOut,
  Citation,
  ConversationList,
  ConversationOut,
  Started,
  TranscriptOut,
  TurnOut,
  Usage,
} from "../lib/types";

type AskMode = "hybrid" | "vector" | "keyword";
type TurnState = "streaming" | "pending" | "answered" | "failed" | "stopped";

interface ChatTurn {
  key: string;
  question: string;
  mode: AskMode;
  state: TurnState;
  answer: string;
  citations: Citation[];
  provider: string | null;
  model: string | null;
  usage: Usage | null;
  cost: string | null;
  latencyMs: number | null;
  flags: string[];
  failure: string | null;
}

function fromTranscript(turn: TurnOut): ChatTurn {
  return {
    key: `t${turn.turn}`,
    question: turn.question,
    mode: (turn.mode as AskMode) || "hybrid",
    state: turn.status === "answered" ? "answered" : turn.status === "failed" ? "failed" : "pending",
    answer: turn.answer ?? "",
    citations: turn.citations,
    provider: turn.provider,
    model: turn.model,
    usage: turn.usage,
    cost: turn.cost_usd,
    latencyMs: turn.latency_ms,
    flags: turn.flags,
    failure: turn.failure ? failureText(turn.failure) : null,
  };
}

/** A recorded failure as a person reads it: a stream cut off by its own page is said as such. */
function failureText(failure: { code: string; reason: string }): string {
  if (failure.code === "client_disconnected") {
    return "The answer was interrupted: the page was closed, reloaded or stopped before it was complete.";
  }
  return failure.reason || failure.code;
}

function withAnswer(turn: ChatTurn, answer: AnswerOut): ChatTurn {
  return {
    ...turn,
    key: `t${answer.turn}`,
    state: "answered",
    answer: answer.answer,
    citations: answer.citations,
    provider: answer.provider,
    model: answer.model,
    usage: answer.usage,
    cost: answer.cost_usd,
    latencyMs: answer.latency_ms,
    flags: answer.flags,
  };
}

const TITLE_CHARS = 80;

// A question being answered is remembered for the tab (sessionStorage) until its outcome is
// known here: reloaded mid-answer, the page shows it pending even if the transcript does not
// have it yet, and follows the transcript until the outcome is recorded.
const ASKING_MS = 60_000;

interface Asking {
  question: string;
  at: number;
}

function askingKey(conversationId: string): string {
  return `kf-asking:${conversationId}`;
}

function rememberAsking(conversationId: string, question: string): void {
  try {
    window.sessionStorage.setItem(askingKey(conversationId), JSON.stringify({ question, at: Date.now() }));
  } catch {
    // storage unavailable: a reload shows what the transcript has
  }
}

function forgetAsking(conversationId: string): void {
  try {
    window.sessionStorage.removeItem(askingKey(conversationId));
  } catch {
    // nothing remembered
  }
}

function recalledAsking(conversationId: string): Asking | null {
  try {
    const raw = window.sessionStorage.getItem(askingKey(conversationId));
    const value = raw ? (JSON.parse(raw) as Asking) : null;
    return value && typeof value.question === "string" && typeof value.at === "number" ? value : null;
  } catch {
    return null;
  }
}

/** The transcript's turns, plus the question asked before a reload if it is not there yet. */
function withAsking(conversationId: string, transcript: TranscriptOut): ChatTurn[] {
  const turns = transcript.turns.map(fromTranscript);
  const asking = recalledAsking(conversationId);
  if (!asking) return turns;
  const recorded = transcript.turns.some(
    (t) => t.question === asking.question && Date.parse(t.asked_at) >= asking.at - ASKING_MS,
  );
  if (recorded || Date.now() - asking.at > ASKING_MS) {
    forgetAsking(conversationId);
    return turns;
  }
  return [
    ...turns,
    {
      key: "asking",
      question: asking.question,
      mode: "hybrid",
      state: "pending",
      answer: "",
      citations: [],
      provider: null,
      model: null,
      usage: null,
      cost: null,
      latencyMs: null,
      flags: [],
      failure: null,
    },
  ];
}

function titleOf(question: string): string {
  const line = question.replace(/\s+/g, " ").trim();
  return line.length > TITLE_CHARS ? `${line.slice(0, TITLE_CHARS - 1)}…` : line;
}

export function ChatPage({ conversationId }: { conversationId: string | null }) {
  const { me } = useAuth();
  const [conversations, setConversations] = useState<ConversationOut[]>([]);
  const [listLoading, setListLoading] = useState(true);
  const [listError, setListError] = useState<unknown>(null);
  const [turns, setTurns] = useState<ChatTurn[]>([]);
  const [title, setTitle] = useState("");
  const [loading, setLoading] = useState(false);
  const [loadError, setLoadError] = useState<unknown>(null);
  const [draft, setDraft] = useState("");
  const [mode, setMode] = useState<AskMode>("hybrid");
  const [streaming, setStreaming] = useState(false);
  const [drawer, setDrawer] = useState(false);
  const [toDelete, setToDelete] = useState<ConversationOut | null>(null);
  const [deleting, setDeleting] = useState(false);
  const [deleteError, setDeleteError] = useState<unknown>(null);

  const controller = useRef<AbortController | null>(null);
  const createdHere = useRef<string | null>(null);
  const minPosition = useRef<number | null>(null);
  const logRef = useRef<HTMLDivElement>(null);
  const inputRef = useRef<HTMLTextAreaElement>(null);
  const stick = useRef(true);

  useTitle(title || (conversationId ? "Chat" : "New chat"));

  const loadList = useCallback(async () => {
    try {
      const page = await api.get<ConversationList>("/v1/conversations", {
        limit: 100,
        min_position: minPosition.current ?? undefined,
      });
      setConversations(page.items);
      setListError(null);
    } catch (failure) {
      setListError(failure);
    } finally {
      setListLoading(false);
    }
  }, []);

  useEffect(() => {
    void loadList();
  }, [loadList]);

  // Open a conversation: its transcript comes from the API (also after a reload).
  const loadTranscript = useCallback(async (id: string, quiet = false) => {
    if (!quiet) setLoading(true);
    try {
      const transcript = await api.get<TranscriptOut>(`/v1/conversations/${encodeURIComponent(id)}`, {
        min_position: minPosition.current ?? undefined,
      });
      setTurns(withAsking(id, transcript));
      setTitle(transcript.title);
      setLoadError(null);
    } catch (failure) {
      setLoadError(failure);
    } finally {
      setLoading(false);
    }
  }, []);

  useEffect(() => {
    setDrawer(false);
    if (conversationId === null) {
      if (!streaming) {
        setTurns([]);
        setTitle("");
        setLoadError(null);
      }
      return;
    }
    if (createdHere.current === conversationId) return; // its turns are already on screen
    controller.current?.abort();
    createdHere.current = null;
    setTurns([]);
    setTitle("");
    void loadTranscript(conversationId);
  }, [conversationId, loadTranscript]);

  // A turn still pending (asked elsewhere, or before a reload): look again every 2 s.
  const pending = turns.some((t) => t.state === "pending");
  useEffect(() => {
    if (!pending || !conversationId || streaming) return;
    const timer = window.setInterval(() => void loadTranscript(conversationId, true), 2000);
    return () => window.clearInterval(timer);
  }, [pending, conversationId, streaming, loadTranscript]);

  // Keep the newest text in view unless the reader scrolled up.
  useEffect(() => {
    const log = logRef.current;
    if (log && stick.current) log.scrollTop = log.scrollHeight;
  }, [turns]);

  useEffect(() => () => controller.current?.abort(), []);

  const patchTurn = (key: string, change: (turn: ChatTurn) => ChatTurn) =>
    setTurns((all) => all.map((t) => (t.key === key ? change(t) : t)));

  async function ask(question: string, askMode: AskMode) {
    const text = question.trim();
    if (!text || streaming) return;
    const key = `local-${Date.now()}`;
    const turn: ChatTurn = {
      key,
      question: text,
      mode: askMode,
      state: "streaming",
      answer: "",
      citations: [],
      provider: null,
      model: null,
      usage: null,
      cost: null,
      latencyMs: null,
      flags: [],
      failure: null,
    };
    stick.current = true;
    setTurns((all) => [...all, turn]);
    setStreaming(true);
    const abort = new AbortController();
    controller.current = abort;
    let id = conversationId;
    try {
      if (!id) {
        const started = await api.post<Started>("/v1/conversations", { title: titleOf(text) });
        id = started.id;
        minPosition.current = Math.max(minPosition.current ?? 0, started.position);
        createdHere.current = id;
        setTitle(titleOf(text));
        navigate(`/chat/${id}`, { replace: true });
        void loadList();
      }
      rememberAsking(id, text);
      const answer = await askStreaming(
        id,
        { question: text, mode: askMode },
        (delta) => patchTurn(key, (t) => ({ ...t, answer: t.answer + delta })),
        abort.signal,
      );
      minPosition.current = Math.max(minPosition.current ?? 0, answer.position);
      patchTurn(key, (t) => withAnswer(t, answer));
    } catch (failure) {
      if (abort.signal.aborted) {
        patchTurn(key, (t) => ({ ...t, state: "stopped" }));
      } else {
        patchTurn(key, (t) => ({ ...t, state: "failed", failure: messageOf(failure) }));
      }
    } finally {
      if (id) forgetAsking(id);
      if (controller.current === abort) controller.current = null;
      setStreaming(false);
      void loadList();
      if (!abort.signal.aborted) inputRef.current?.focus();
    }
  }

  function submit(event?: FormEvent) {
    event?.preventDefault();
    const text = draft;
    if (!text.trim() || streaming) return;
    setDraft("");
    void ask(text, mode);
  }

  function onKeyDown(event: KeyboardEvent<HTMLTextAreaElement>) {
    if (event.key === "Enter" && !event.shiftKey && !event.nativeEvent.isComposing) {
      event.preventDefault();
      submit();
    }
  }

  function stop() {
    controller.current?.abort();
  }

  function newChat() {
    controller.current?.abort();
    createdHere.current = null;
    setTurns([]);
    setTitle("");
    setLoadError(null);
    navigate("/");
    window.setTimeout(() => inputRef.current?.focus(), 0);
  }

  async function confirmDelete() {
    if (!toDelete) return;
    setDeleting(true);
    setDeleteError(null);
    try {
      const erased = await api.post<Started>(`/v1/conversations/${encodeURIComponent(toDelete.id)}/erase`);
      minPosition.current = Math.max(minPosition.current ?? 0, erased.position);
      setConversations((all) => all.filter((c) => c.id !== toDelete.id));
      if (toDelete.id === conversationId) newChat();
      setToDelete(null);
      void loadList();
    } catch (failure) {
      setDeleteError(failure);
    } finally {
      setDeleting(false);
    }
  }

  const sidebar = (
    <ConversationSidebar
      conversations={conversations}
      loading={listLoading}
      error={listError}
      currentId={conversationId}
      onNew={newChat}
      onDelete={(c) => {
        setDeleteError(null);
        setToDelete(c);
      }}
    />
  );
  const notFound = loadError instanceof ApiError && loadError.status === 404;

  return (
    <div className="flex min-h-0 flex-1">
      <div className="hidden w-64 shrink-0 border-r border-zinc-200 dark:border-zinc-800 md:flex md:flex-col">
        {sidebar}
      </div>
      {drawer ? (
        <div className="fixed inset-0 z-40 md:hidden">
          <button
            type="button"
            tabIndex={-1}
            aria-hidden="true"
            className="absolute inset-0 h-full w-full cursor-default bg-zinc-950/40"
            onClick={() => setDrawer(false)}
          />
          <div
            id="conversation-drawer"
            className="relative flex h-full w-[min(20rem,85vw)] flex-col bg-white shadow-xl dark:bg-zinc-950"
          >
            <div className="flex items-center justify-end px-2 pt-2">
              <button type="button" className="btn-icon" aria-label="Close conversations" onClick={() => setDrawer(false)}>
                <CloseIcon />
              </button>
            </div>
            {sidebar}
          </div>
        </div>
      ) : null}

      <section aria-labelledby="chat-title" className="flex min-w-0 flex-1 flex-col">
        <div className="flex h-12 shrink-0 items-center gap-2 border-b border-zinc-200 px-3 dark:border-zinc-800 sm:px-4">
          <button
            type="button"
            className="btn-icon md:hidden"
            aria-label="Show conversations"
            aria-expanded={drawer}
            aria-controls="conversation-drawer"
            onClick={() => setDrawer(true)}
          >
            <MenuIcon />
          </button>
          <h1 id="chat-title" className="min-w-0 flex-1 truncate text-sm font-semibold">
            {title || (conversationId ? "Conversation" : "New chat")}
          </h1>
          <button type="button" className="btn-ghost md:hidden" onClick={newChat}>
            <PlusIcon />
            New
          </button>
        </div>

        <div
          ref={logRef}
          onScroll={(e) => {
            const el = e.currentTarget;
            stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 80;
          }}
          className="min-h-0 flex-1 overflow-y-auto"
        >
          <div className="mx-auto max-w-3xl px-4 py-6 sm:px-6">
            {loading ? (
              <div className="py-10 text-center">
                <Spinner label="Loading conversation" />
              </div>
            ) : loadError ? (
              <ErrorNotice error={notFound ? new Error("This conversation does not exist, or was deleted.") : loadError}>
                <button type="button" className="btn-secondary mt-2" onClick={newChat}>
                  Start a new chat
                </button>
              </ErrorNotice>
            ) : turns.length === 0 ? (
              <Welcome name={me?.email ?? null} onPick={(q) => void ask(q, mode)} />
            ) : null}
            <div role="log" aria-live="polite" aria-relevant="additions text" aria-label="Conversation" className="space-y-8">
              {turns.map((turn) => (
                <TurnView
                  key={turn.key}
                  turn={turn}
                  onRetry={() => void ask(turn.question, turn.mode)}
                  canRetry={!streaming}
                />
              ))}
            </div>
          </div>
        </div>

        <div className="shrink-0 border-t border-zinc-200 bg-white/95 px-3 pb-3 pt-3 dark:border-zinc-800 dark:bg-zinc-950/95 sm:px-4">
          <form onSubmit={submit} className="mx-auto max-w-3xl">
            <label htmlFor="question" className="sr-only">
              Ask a question about your documents
            </label>
            <div className="rounded-lg border border-zinc-300 bg-white shadow-sm focus-within:border-indigo-500 focus-within:ring-2 focus-within:ring-indigo-500/30 dark:border-zinc-700 dark:bg-zinc-900 dark:focus-within:border-indigo-400">
              <textarea
                ref={inputRef}
                id="question"
                rows={2}
                value={draft}
                onChange={(e) => setDraft(e.target.value)}
                onKeyDown={onKeyDown}
                placeholder="Ask a question about your documents…"
                className="block max-h-48 min-h-[3.25rem] w-full resize-y rounded-t-lg border-0 bg-transparent px-3 py-2.5 text-sm placeholder:text-zinc-500 focus:outline-none focus:ring-0"
                aria-describedby="question-hint"
              />
              <div className="flex items-center justify-between gap-2 px-2 pb-2">
                <div className="flex items-center gap-2">
                  <label htmlFor="ask-mode" className="muted text-xs">
                    Retrieval
                  </label>
                  <select
                    id="ask-mode"
                    value={mode}
                    onChange={(e) => setMode(e.target.value as AskMode)}
                    className="rounded-md border border-zinc-300 bg-white py-1 pl-2 pr-7 text-xs dark:border-zinc-700 dark:bg-zinc-900"
                  >
                    <option value="hybrid">Hybrid</option>
                    <option value="vector">Semantic</option>
                    <option value="keyword">Keyword</option>
                  </select>
                </div>
                {streaming ? (
                  <button type="button" className="btn-secondary" onClick={stop}>
                    <StopIcon />
                    Stop
                  </button>
                ) : (
                  <button type="submit" className="btn-primary" disabled={!draft.trim()}>
                    <SendIcon />
                    Send
                  </button>
                )}
              </div>
            </div>
            <p id="question-hint" className="muted mt-1.5 hidden text-xs sm:block">
              Enter to send, Shift+Enter for a new line. Answers cite the passages they quote.
            </p>
          </form>
        </div>
      </section>

      <ConfirmDialog
        open={toDelete !== null}
        title="Delete conversation?"
        confirmLabel="Delete"
        busy={deleting}
        error={deleteError}
        onConfirm={() => void confirmDelete()}
        onCancel={() => setToDelete(null)}
      >
        <p>
          “{toDelete?.title || "Untitled conversation"}” will be erased: its questions and answers can no longer be
          read, by anyone. This cannot be undone.
        </p>
      </ConfirmDialog>
    </div>
  );
}

function ConversationSidebar({
  conversations,
  loading,
  error,
  currentId,
  onNew,
  onDelete,
}: {
  conversations: ConversationOut[];
  loading: boolean;
  error: unknown;
  currentId: string | null;
  onNew: () => void;
  onDelete: (c: ConversationOut) => void;
}) {
  return (
    <nav aria-label="Conversations" className="flex min-h-0 flex-1 flex-col">
      <div className="p-3">
        <button type="button" className="btn-secondary w-full justify-start" onClick={onNew}>
          <PlusIcon />
          New chat
        </button>
      </div>
      <div className="min-h-0 flex-1 overflow-y-auto px-2 pb-3">
        {error ? <ErrorNotice error={error} /> : null}
        {loading ? (
          <div className="p-3">
            <Spinner label="Loading conversations" />
          </div>
        ) : conversations.length === 0 ? (
          <p className="muted px-2 py-3 text-xs">No conversations yet.</p>
        ) : (
          <ul className="space-y-0.5">
            {conversations.map((c) => {
              const active = c.id === currentId;
              return (
                <li key={c.id} className="group relative">
                  <Link
                    to={`/chat/${c.id}`}
                    aria-current={active ? "page" : undefined}
                    className={`block rounded-md py-2 pl-2.5 pr-9 ${
                      active
                        ? "bg-zinc-200/70 text-zinc-900 dark:bg-zinc-800 dark:text-zinc-50"
                        : "text-zinc-700 hover:bg-zinc-100 dark:text-zinc-300 dark:hover:bg-zinc-800/60"
                    }`}
                  >
                    <span className="block truncate text-sm">{c.title || "Untitled conversation"}</span>
                    <span className="muted block text-xs">
                      {formatRelative(c.updated_at)} · {c.turn_count} {c.turn_count === 1 ? "question" : "questions"}
                    </span>
                  </Link>
                  <button
                    type="button"
                    className="btn-icon absolute right-1 top-1/2 h-7 w-7 -translate-y-1/2 opacity-100 focus:opacity-100 group-hover:opacity-100 md:opacity-0"
                    aria-label={`Delete conversation ${c.title || "Untitled conversation"}`}
                    onClick={() => onDelete(c)}
                  >
                    <TrashIcon />
                  </button>
                </li>
              );
            })}
          </ul>
        )}
      </div>
    </nav>
  );
}

function Welcome({ name, onPick }: { name: string | null; onPick: (q: string) => void }) {
  const examples = [
    "Summarise the main points of the most recent documents.",
    "What does our documentation say about data retention?",
    "List the open questions mentioned in the meeting notes.",
  ];
  return (
    <div className="py-8 text-center sm:py-14">
      <div className="mx-auto flex h-10 w-10 items-center justify-center rounded-full bg-indigo-100 text-indigo-700 dark:bg-indigo-500/20 dark:text-indigo-300">
        <ChatIcon width={20} height={20} />
      </div>
      <h2 className="mt-4 text-lg font-semibold">Ask your documents</h2>
      <p className="muted mx-auto mt-1 max-w-md">
        {name ? `Hi ${name.split("@")[0]}. ` : ""}Answers are written from your workspace's documents, with numbered
        citations you can open.
      </p>
      <ul className="mx-auto mt-6 grid max-w-xl gap-2 text-left">
        {examples.map((q) => (
          <li key={q}>
            <button
              type="button"
              onClick={() => onPick(q)}
              className="w-full rounded-lg border border-zinc-200 px-3 py-2 text-left text-sm text-zinc-700 hover:border-zinc-300 hover:bg-zinc-50 dark:border-zinc-800 dark:text-zinc-300 dark:hover:border-zinc-700 dark:hover:bg-zinc-900"
            >
              {q}
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}

function TurnView({ turn, onRetry, canRetry }: { turn: ChatTurn; onRetry: () => void; canRetry: boolean }) {
  const byNumber = new Map(turn.citations.map((c) => [c.n, c]));
  const busy = turn.state === "streaming" || turn.state === "pending";
  return (
    <div className="space-y-3">
      <div className="flex justify-end">
        <div className="max-w-[85%] whitespace-pre-wrap break-words rounded-2xl rounded-br-sm bg-zinc-100 px-4 py-2.5 text-zinc-900 dark:bg-zinc-800 dark:text-zinc-100">
          <span className="sr-only">You asked: </span>
          {turn.question}
        </div>
      </div>
      <article aria-busy={busy} aria-label="Answer" className="min-w-0">
        {turn.answer ? (
          <div className="prose-kf break-words">
            <Markdown
              source={turn.answer}
              cite={(n, key, before) => {
                const citation = byNumber.get(n);
                return citation ? <CitationButton key={key} citation={citation} quoted={before} /> : null;
              }}
            />
            {turn.state === "streaming" ? (
              <p className="muted flex items-center gap-2 text-xs">
                <Spinner label="Answering" />
                Answering…
              </p>
            ) : null}
          </div>
        ) : busy ? (
          <p className="muted inline-flex items-center gap-2">
            <Spinner label="Answering" />
            {turn.state === "pending" ? "Answer pending…" : "Searching your documents…"}
          </p>
        ) : null}

        {turn.state === "failed" || turn.state === "stopped" ? (
          <div className="mt-3">
            {turn.state === "failed" ? (
              <ErrorNotice error={new Error(turn.failure ?? "The answer failed.")}>
                <button type="button" className="btn-secondary mt-2" onClick={onRetry} disabled={!canRetry}>
                  <RetryIcon />
                  Retry
                </button>
              </ErrorNotice>
            ) : (
              <p className="muted flex items-center gap-3 text-sm">
                Stopped.
                <button type="button" className="btn-secondary" onClick={onRetry} disabled={!canRetry}>
                  <RetryIcon />
                  Retry
                </button>
              </p>
            )}
          </div>
        ) : null}

        {turn.state === "answered" ? <AnswerMeta turn={turn} /> : null}
      </article>
    </div>
  );
}

function AnswerMeta({ turn }: { turn: ChatTurn }) {
  const parts = [
    turn.provider,
    turn.model,
    turn.usage ? `${turn.usage.input_tokens.toLocaleString()} in / ${turn.usage.output_tokens.toLocaleString()} out tokens` : null,
    formatCost(turn.cost),
    turn.latencyMs !== null ? `${(turn.latencyMs / 1000).toFixed(1)} s` : null,
  ].filter(Boolean);
  return (
    <div className="mt-3 space-y-1">
      <p className="muted text-xs">{parts.join(" · ")}</p>
      {turn.flags.length ? (
        <p className="text-xs text-amber-800 dark:text-amber-200">
          Flagged by prompt-injection rules: {turn.flags.join(", ")}
        </p>
      ) : null}
    </div>
  );
}
