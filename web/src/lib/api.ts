// The one API client: every request to /v1 goes through here. Browser sessions are cookies
// (`kf_session`, HttpOnly); state-changing requests also send `X-CSRF-Token` with the value
// of the readable `kf_csrf` cookie.

import type { AnswerOut, Accepted } from "./types";

const UNSAFE_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const CSRF_COOKIE = "kf_csrf";
const CSRF_HEADER = "X-CSRF-Token";

/** An error answered by the API (or a network failure, status 0). */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly retryAfter: number | null;
  readonly details: Record<string, unknown> | null;

  constructor(
    status: number,
    code: string,
    message: string,
    retryAfter: number | null = null,
    details: Record<string, unknown> | null = null,
  ) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
    this.details = details;
  }
}

let csrfFromLogin: string | null = null;

/** Keep the token a sign-in answered with (used if the cookie cannot be read). */
export function rememberCsrf(token: string | null): void {
  csrfFromLogin = token;
}

export function csrfToken(): string | null {
  for (const part of document.cookie.split(";")) {
    const [name, ...rest] = part.trim().split("=");
    if (name === CSRF_COOKIE) {
      return decodeURIComponent(rest.join("="));
    }
  }
  return csrfFromLogin;
}

type UnauthorizedHandler = () => void;
let unauthorizedHandler: UnauthorizedHandler | null = null;

/** Called when a request answers 401 (the session ended): the app sends the user to sign in. */
export function onUnauthorized(handler: UnauthorizedHandler | null): void {
  unauthorizedHandler = handler;
}

const AUTH_PATHS = ["/v1/auth/login", "/v1/auth/password", "/v1/auth/me"];

function notifyUnauthorized(status: number, path: string): void {
  if (status === 401 && !AUTH_PATHS.some((p) => path.startsWith(p))) {
    unauthorizedHandler?.();
  }
}

function retryAfterOf(value: string | null): number | null {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, Math.round(seconds));
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.round((at - Date.now()) / 1000));
}

const FALLBACK_MESSAGES: Record<number, string> = {
  0: "The server could not be reached. Check your connection and try again.",
  401: "You are not signed in.",
  403: "You do not have permission to do this.",
  404: "Not found.",
  413: "The file is too large.",
  429: "Too many requests. Try again shortly.",
  500: "The server had a problem. Try again.",
  502: "The server had a problem. Try again.",
  503: "The service is busy. Try again shortly.",
};

/**
 * An ApiError from an error answer's body: `{"code", "message"}` (infra/web.py ErrorBody),
 * or `{"error": {"code", "message"}}`, or FastAPI's `{"detail": ...}`.
 */
export function errorFromBody(
  status: number,
  text: string,
  retryAfterHeader: string | null,
): ApiError {
  let code = "http_error";
  let message = FALLBACK_MESSAGES[status] ?? `Request failed (HTTP ${status}).`;
  let details: Record<string, unknown> | null = null;
  try {
    const body: unknown = JSON.parse(text);
    if (body && typeof body === "object") {
      const record = body as Record<string, unknown>;
      const inner =
        record.error && typeof record.error === "object"
          ? (record.error as Record<string, unknown>)
          : record;
      if (typeof inner.code === "string") code = inner.code;
      if (typeof inner.message === "string" && inner.message) message = inner.message;
      else if (typeof record.detail === "string") message = record.detail;
      if (inner.details && typeof inner.details === "object") {
        details = inner.details as Record<string, unknown>;
      }
    }
  } catch {
    // not JSON: keep the fallback message
  }
  return new ApiError(status, code, message, retryAfterOf(retryAfterHeader), details);
}

async function errorFromResponse(response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => "");
  return errorFromBody(response.status, text, response.headers.get("Retry-After"));
}

export type Query = Record<string, string | number | boolean | null | undefined>;

export function withQuery(path: string, query?: Query): string {
  if (!query) return path;
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== "") params.set(key, String(value));
  }
  const qs = params.toString();
  return qs ? `${path}?${qs}` : path;
}

interface RequestOptions {
  body?: unknown;
  query?: Query;
  signal?: AbortSignal;
  accept?: string;
}

function headersFor(method: string, accept: string, json: boolean): Headers {
  const headers = new Headers({ Accept: accept });
  if (json) headers.set("Content-Type", "application/json");
  if (UNSAFE_METHODS.has(method)) {
    const token = csrfToken();
    if (token) headers.set(CSRF_HEADER, token);
  }
  return headers;
}

async function send(method: string, path: string, options: RequestOptions): Promise<Response> {
  const url = withQuery(path, options.query);
  const json = options.body !== undefined;
  let response: Response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: headersFor(method, options.accept ?? "application/json", json),
      body: json ? JSON.stringify(options.body) : undefined,
      signal: options.signal,
    });
  } catch (error) {
    if (error instanceof DOMException && error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", FALLBACK_MESSAGES[0] ?? "Network error.");
  }
  if (!response.ok) {
    notifyUnauthorized(response.status, path);
    throw await errorFromResponse(response);
  }
  return response;
}

export async function request<T>(
  method: string,
  path: string,
  options: RequestOptions = {},
): Promise<T> {
  const response = await send(method, path, options);
  if (response.status === 204) return undefined as T;
  const text = await response.text();
  return (text ? JSON.parse(text) : undefined) as T;
}

export const api = {
  get: <T>(path: string, query?: Query, signal?: AbortSignal) =>
    request<T>("GET", path, { query, signal }),
  post: <T>(path: string, body?: unknown) => request<T>("POST", path, { body }),
  patch: <T>(path: string, body?: unknown) => request<T>("PATCH", path, { body }),
  del: <T>(path: string) => request<T>("DELETE", path),
};

// ---------------------------------------------------------------------------- uploads

export interface UploadResult {
  status: number;
  body: Accepted;
}

export interface UploadHandle {
  promise: Promise<UploadResult>;
  abort: () => void;
}

/**
 * Upload one file with XMLHttpRequest, whose upload progress events report bytes sent
 * (fetch cannot). 202: stored; 200 with `duplicate: true`: these bytes were already there.
 * `onSent`: every byte is out; from then on `abort` does nothing (the upload is the server's).
 */
export function uploadDocument(
  file: File,
  onProgress: (sent: number, total: number) => void,
  onSent?: () => void,
): UploadHandle {
  const xhr = new XMLHttpRequest();
  // Once every byte has gone out, the server may be storing the file already: aborting
  // would only stop us hearing how it went, and say "cancelled" of a file that was kept.
  let bodySent = false;
  const promise = new Promise<UploadResult>((resolve, reject) => {
    xhr.open("POST", "/v1/documents");
    xhr.withCredentials = true;
    xhr.setRequestHeader("Accept", "application/json");
    const token = csrfToken();
    if (token) xhr.setRequestHeader(CSRF_HEADER, token);
    const progress = (event: ProgressEvent) => {
      onProgress(event.loaded, event.lengthComputable ? event.total : file.size);
    };
    xhr.upload.onprogress = progress;
    xhr.upload.onload = (event) => {
      bodySent = true;
      progress(event); // the bar full: the last progress event may have come before the end
      onSent?.();
    };
    xhr.onload = () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        try {
          resolve({ status: xhr.status, body: JSON.parse(xhr.responseText) as Accepted });
        } catch {
          reject(new ApiError(xhr.status, "invalid_response", "The server's answer was unreadable."));
        }
        return;
      }
      notifyUnauthorized(xhr.status, "/v1/documents");
      reject(errorFromBody(xhr.status, xhr.responseText, xhr.getResponseHeader("Retry-After")));
    };
    xhr.onerror = () => reject(new ApiError(0, "network_error", FALLBACK_MESSAGES[0] ?? ""));
    xhr.onabort = () => reject(new DOMException("Upload cancelled", "AbortError"));
    const form = new FormData();
    form.append("file", file, file.name);
    xhr.send(form);
  });
  return {
    promise,
    abort: () => {
      if (!bodySent) xhr.abort();
    },
  };
}

// --------------------------------------------------------------------- streamed answers

export interface AskBody {
  question: string;
  mode?: "hybrid" | "vector" | "keyword";
  model?: string;
  k?: number;
}

interface SseEvent {
  event: string;
  data: string;
}

/** Split a server-sent-events buffer into complete events and the unfinished rest. */
export function parseSse(buffer: string): { events: SseEvent[]; rest: string } {
  const normalised = buffer.replace(/\r\n?/g, "\n");
  const blocks = normalised.split("\n\n");
  const rest = blocks.pop() ?? "";
  const events: SseEvent[] = [];
  for (const block of blocks) {
    let event = "message";
    const data: string[] = [];
    for (const line of block.split("\n")) {
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let value = colon === -1 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") event = value;
      else if (field === "data") data.push(value);
    }
    if (data.length) events.push({ event, data: data.join("\n") });
  }
  return { events, rest };
}

/**
 * Ask a question with `Accept: text/event-stream`: `delta` events carry text, then one
 * `answer` event (the whole answer with citations and usage) or one `error` event.
 */
export async function askStreaming(
  conversationId: string,
  body: AskBody,
  onDelta: (text: string) => void,
  signal: AbortSignal,
): Promise<AnswerOut> {
  const path = `/v1/conversations/${encodeURIComponent(conversationId)}/questions`;
  const response = await send("POST", path, { body, signal, accept: "text/event-stream" });
  const type = response.headers.get("Content-Type") ?? "";
  if (!type.includes("text/event-stream") || !response.body) {
    return (await response.json()) as AnswerOut;
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    buffer += decoder.decode(value, { stream: !done });
    const { events, rest } = parseSse(done ? `${buffer}\n\n` : buffer);
    buffer = rest;
    for (const item of events) {
      const data: unknown = JSON.parse(item.data);
      if (item.event === "delta") {
        onDelta((data as { text: string }).text);
      } else if (item.event === "answer") {
        await reader.cancel().catch(() => undefined);
        return data as AnswerOut;
      } else if (item.event === "error") {
        const failure = data as { code?: string; message?: string };
        throw new ApiError(
          200,
          failure.code ?? "answer_failed",
          failure.message ?? "The answer failed.",
        );
      }
    }
    if (done) break;
  }
  throw new ApiError(0, "stream_ended", "The answer stream ended before the answer was complete.");
}
