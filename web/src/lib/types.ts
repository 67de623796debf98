// Shapes of the public REST API under /v1 (see write_api/*.py and projections/*/routes.py).

export type Role = "viewer" | "editor" | "admin" | "auditor" | "analyst";

export interface Me {
  kind: "user" | "key";
  id: string;
  email: string | null;
  role: Role;
  tenant_id: string;
}

export interface SessionUser {
  id: string;
  email: string;
  role: Role;
  tenant_id: string;
}

export interface SessionOut {
  user: SessionUser;
  csrf_token: string;
}

export type DocumentStatus =
  | "uploaded"
  | "parsed"
  | "chunked"
  | "embedded"
  | "failed"
  | "deleted"
  | "erased";

export interface DocumentOut {
  id: string;
  filename: string;
  media_type: string;
  size_bytes: number;
  content_sha256: string;
  status: DocumentStatus;
  page_count: number | null;
  char_count: number | null;
  chunk_count: number | null;
  warnings: string[];
  failure: { stage: string; code: string; reason: string } | null;
  uploaded_by: string;
  uploaded_at: string;
  updated_at: string;
  deleted_at: string | null;
  legal_hold: boolean;
  /** While it is processed (one document's GET only): the tenant's documents ahead of it. */
  ahead?: number | null;
  version: number;
  position: number;
}

export interface DocumentList {
  items: DocumentOut[];
  next_cursor: string | null;
}

export interface Accepted {
  id: string;
  position: number;
  duplicate: boolean;
}

export type SearchMode = "hybrid" | "vector" | "keyword" | "exact";

export interface SearchHit {
  document_id: string;
  filename: string;
  media_type: string;
  chunk_index: number;
  page: number | null;
  page_end: number | null;
  text: string;
  snippet: string;
  score: number;
  ranks: { vector: number | null; keyword: number | null };
}

export interface SearchResponse {
  query: string;
  mode: SearchMode;
  k: number;
  results: SearchHit[];
  took_ms: number;
}

export interface ConversationOut {
  id: string;
  title: string;
  origin: "conversations" | "chat_completions";
  started_by: string;
  started_at: string;
  updated_at: string;
  turn_count: number;
  position: number;
}

export interface ConversationList {
  items: ConversationOut[];
  next_cursor: string | null;
}

export interface Started {
  id: string;
  position: number;
}

export interface Citation {
  n: number;
  document_id: string;
  filename: string;
  page: number | null;
  chunk_index: number;
  text: string | null;
}

export interface Usage {
  input_tokens: number;
  output_tokens: number;
}

export interface TurnOut {
  turn: number;
  question: string;
  asked_by: string;
  asked_at: string;
  status: "pending" | "answered" | "failed";
  answer: string | null;
  citations: Citation[];
  requested_model: string;
  mode: string;
  k: number;
  flags: string[];
  provider: string | null;
  model: string | null;
  usage: Usage | null;
  cost_usd: string | null;
  latency_ms: number | null;
  failure: { code: string; reason: string } | null;
  answered_at: string | null;
  position: number;
}

export interface TranscriptOut extends ConversationOut {
  turns: TurnOut[];
}

/** The final `answer` event of a streamed question (and the JSON answer). */
export interface AnswerOut {
  turn: number;
  answer: string;
  citations: Citation[];
  provider: string;
  model: string;
  usage: Usage;
  cost_usd: string | null;
  latency_ms: number;
  flags: string[];
  position: number;
}

export type UserStatus = "invited" | "active" | "disabled";

export interface UserOut {
  id: string;
  email: string;
  role: Role;
  status: UserStatus;
  invited_at: string | null;
  last_sign_in_at: string | null;
  link_expires_at?: string | null;
  sign_ins?: number;
  position?: number;
}

export interface UserList {
  users: UserOut[];
  next_cursor?: string | null;
}

/** What PATCH /v1/users/{id}, .../disable and .../enable answer. */
export interface Changed {
  id: string;
  position: number;
  changed: boolean;
}

export interface Invited {
  id: string;
  position: number;
  email: string;
  role: Role;
  link: string;
  link_expires_at: string;
  emailed: boolean;
}

export interface KeyOut {
  id: string;
  name: string;
  role: string;
  issued_by: string;
  issued_at: string;
  expires_at: string | null;
  revoked_by: string | null;
  revoked_at: string | null;
  /** Added by the API later: absent on older servers; null: never used. */
  last_used_at?: string | null;
  position: number;
}

export interface KeyList {
  items: KeyOut[];
  next_cursor: string | null;
}

export interface IssuedKey {
  id: string;
  position: number;
  name: string;
  role: Role;
  expires_at: string | null;
  key: string;
}

export interface ProjectionsOut {
  components: {
    name: string;
    kind: string;
    lag: number;
    contexts: { context: string; position: number; head: number; lag: number }[];
  }[];
}

// ------------------------------------------------------------------ usage and budgets

/** One group's figures of GET /v1/usage (money as decimal strings). */
export interface UsageFigures {
  group: Record<string, string | null>;
  questions: number;
  answers: number;
  failures: number;
  input_tokens: number;
  output_tokens: number;
  cost_charged_usd: string;
  unpriced_answers: number;
  cost_current_usd: string;
  cost_repriced_usd: string | null;
  unpriced_repriced: number | null;
  not_repriced: number | null;
  unpriced_now: number;
  latency_ms_p50: number | null;
  latency_ms_p95: number | null;
  documents: number;
  bytes: number;
  pages: number;
  chunks: number;
  embedding_tokens: number;
  searches: Record<string, number>;
}

export interface UsageReport {
  tenant_id: string;
  from: string;
  to: string;
  group_by: string[];
  scope: "tenant" | "own";
  groups: UsageFigures[];
  truncated: boolean;
  total: UsageFigures;
}

export type BudgetMetric = "tokens" | "cost_usd" | "documents" | "bytes";

export interface BudgetOut {
  scope: string;
  metric: BudgetMetric;
  period: "day" | "month" | "total";
  amount: string;
  hard: boolean;
  used: string;
  period_start: string;
  resets_at: string;
}

// ------------------------------------------------------------------ audit

export interface AuditChanges {
  fields: string[];
  values: Record<string, unknown>;
}

export interface AuditEntryOut {
  id: string;
  occurred_at: string;
  tenant_id: string;
  actor: string;
  actor_role: string | null;
  action: string;
  resource: { type: string; id: string; version: number };
  context: string;
  position: number;
  request_id: string | null;
  client_address: string | null;
  user_agent: string | null;
  changes: AuditChanges;
  chain: { index: number; previous_hash: string; entry_hash: string } | null;
}

export interface AuditList {
  items: AuditEntryOut[];
  next_cursor: string | null;
}

/** GET /v1/audit/verification: the tenant's chains recomputed now (runs on demand only). */
export interface VerificationOut {
  tenant_id: string;
  checked_at: string;
  ok: boolean;
  entries: number;
  checkpoints: number;
  findings: string[];
  /** Entries newer than the newest signed checkpoint, by "<tenant>/<context>". */
  not_yet_covered: Record<string, number>;
  not_yet_projected: number;
  dropped_by_retention: number;
  unreadable_checkpoints: string[];
}

export interface ReaderOut {
  actor: string;
  route: string;
  times: number;
  first_seen: string;
  last_seen: string;
}

export interface ReadersOut {
  document_id: string;
  readers: ReaderOut[];
}

export interface HistoryStep {
  action: string;
  occurred_at: string;
  actor: string;
  actor_role: string | null;
  version: number;
  request_id: string | null;
  changes: AuditChanges;
}

export interface DocumentHistory {
  document_id: string;
  steps: HistoryStep[];
}

// ------------------------------------------------------------------ erasure

export interface ErasureConfirmation {
  name: string;
  position: number;
  confirmed_at: string;
  detail: unknown;
}

export interface ErasureCertificateBody {
  format: string;
  tenant_id: string;
  document_id: string;
  erased_at: string | null;
  erased_by: string | null;
  cause: string | null;
  position: number | null;
  keys_destroyed: string[];
  key_still_stored: boolean;
  blobs_still_stored: number;
  read_models: ErasureConfirmation[];
  pending_read_models: string[];
  complete: boolean;
  issued_at: string;
}

export interface SignedErasureCertificate {
  certificate: ErasureCertificateBody;
  signature: string;
  key_id: string;
  public_key: string;
}

// ------------------------------------------------------------------ settings

export type SettingValue = string | number | boolean | null | SettingValue[] | { [key: string]: SettingValue };

export interface SettingsOut {
  settings: Record<string, SettingValue>;
}

// ------------------------------------------------------------------ workers

export interface ConsumerOut {
  name: string;
  exists: boolean;
  pending: number;
  ack_pending: number;
  redelivered: number;
  waiting_pulls: number;
  last_active: string | null;
}

export interface WorkersOut {
  stream: string;
  consumers: ConsumerOut[];
  listening: boolean;
}
