// Usage and budgets: GET /v1/usage per day, model and key over a window of days (UTC), and
// GET /v1/budgets with each budget's use this period. Analysts and admins see the whole
// workspace; viewers and editors their own use (the API answers "scope": "own").

import { useMemo, useState, type FormEvent, type ReactNode } from "react";

import { BarChart, LineChart } from "../components/charts";
import { DownloadIcon } from "../components/icons";
import { EmptyState, ErrorNotice, Spinner, TableHead, TableScroll, useTitle } from "../components/ui";
import { withQuery } from "../lib/api";
import { can, useAuth } from "../lib/auth";
import {
  addDays,
  formatBytes,
  formatCompact,
  formatDate,
  formatDay,
  formatInt,
  formatMonth,
  formatUsd,
  isoDay,
  plural,
} from "../lib/format";
import { useActorNames, useApi } from "../lib/hooks";
import { navigate, useLocation } from "../lib/router";
import type { BudgetOut, UsageFigures, UsageReport } from "../lib/types";

const DEFAULT_DAYS = 30;
const DAY_RE = /^\d{4}-\d{2}-\d{2}$/;
const MAX_DAYS = 3 * 366; // the API's longest window

type Period = "day" | "week" | "month";

/** Days for up to three months, weeks for up to a year and a bit, then months. */
function periodFor(days: number): Period {
  if (days <= 92) return "day";
  if (days <= 400) return "week";
  return "month";
}

function dayCount(from: string, to: string): number {
  return Math.round((Date.parse(`${to}T00:00:00Z`) - Date.parse(`${from}T00:00:00Z`)) / 86_400_000) + 1;
}

function defaultRange(): { from: string; to: string } {
  const to = isoDay(new Date());
  return { from: addDays(to, -(DEFAULT_DAYS - 1)), to };
}

/** The first day of each period the window touches (weeks start on Monday, as the API's). */
function periodsBetween(from: string, to: string, period: Period): string[] {
  const starts: string[] = [];
  let day = from;
  if (period === "week") {
    const weekday = (new Date(`${from}T00:00:00Z`).getUTCDay() + 6) % 7; // Monday 0
    day = addDays(from, -weekday);
  } else if (period === "month") {
    day = `${from.slice(0, 7)}-01`;
  }
  while (day <= to && starts.length < 400) {
    starts.push(day);
    if (period === "day") day = addDays(day, 1);
    else if (period === "week") day = addDays(day, 7);
    else {
      const date = new Date(`${day}T00:00:00Z`);
      date.setUTCMonth(date.getUTCMonth() + 1);
      day = date.toISOString().slice(0, 10);
    }
  }
  return starts;
}

export function UsagePage() {
  const { me } = useAuth();
  const tenantWide = can(me?.role, "usage_tenant");
  const admin = can(me?.role, "admin");
  useTitle(tenantWide ? "Usage and budgets" : "Your usage");
  const { search } = useLocation();
  const fallback = defaultRange();
  const fromParam = search.get("from") ?? "";
  const toParam = search.get("to") ?? "";
  const from = DAY_RE.test(fromParam) ? fromParam : fallback.from;
  const to = DAY_RE.test(toParam) ? toParam : fallback.to;

  const span = { from: `${from}T00:00:00Z`, to: `${addDays(to, 1)}T00:00:00Z` };
  const length = dayCount(from, to);
  const valid = from <= to && length <= MAX_DAYS;
  const period = periodFor(length);
  const byDay = useApi<UsageReport>(valid ? "/v1/usage" : null, { ...span, group_by: period });
  const byModel = useApi<UsageReport>(valid ? "/v1/usage" : null, { ...span, group_by: "model" });
  const byKey = useApi<UsageReport>(valid && tenantWide ? "/v1/usage" : null, { ...span, group_by: "key,user" });
  const budgets = useApi<BudgetOut[]>(tenantWide ? "/v1/budgets" : null);
  const nameOf = useActorNames();

  const days = useMemo(() => periodsBetween(from, to, period), [from, to, period]);
  const perDay = useMemo(() => {
    const found = new Map<string, UsageFigures>();
    for (const group of byDay.data?.groups ?? []) {
      const start = group.group[period];
      if (start) found.set(start.slice(0, 10), group);
    }
    return found;
  }, [byDay.data, period]);

  const scope = byDay.data?.scope ?? (tenantWide ? "tenant" : "own");
  const total = byDay.data?.total ?? null;
  const csv = (groupBy: string) => withQuery("/v1/usage", { ...span, group_by: groupBy, format: "csv" });

  return (
    <div className="mx-auto max-w-6xl px-4 py-6 sm:px-6 lg:py-8">
      <h1 className="page-title">{tenantWide ? "Usage and budgets" : "Your usage"}</h1>
      <p className="muted mt-1">
        {scope === "tenant"
          ? "Everyone's use of this workspace: questions, answers, tokens and their cost."
          : "Your own use only: the questions you asked, their tokens and cost, and what you uploaded."}{" "}
        Days are UTC.
      </p>

      <RangeForm from={from} to={to} />
      {!valid ? (
        <div className="mt-4">
          <ErrorNotice
            error={
              new Error(from > to ? "The first day must not be after the last day." : "A window is at most three years long.")
            }
          />
        </div>
      ) : null}

      <section aria-labelledby="totals-heading" className="mt-6">
        <div className="flex flex-wrap items-baseline justify-between gap-2">
          <h2 id="totals-heading" className="text-base font-semibold">
            {formatDay(from, true)} – {formatDay(to, true)}
          </h2>
          <a className="link inline-flex items-center gap-1 text-sm" href={csv(period)} download>
            <DownloadIcon />
            Download CSV<span className="sr-only"> of usage per {period}</span>
          </a>
        </div>
        <div className="mt-3">
          {byDay.error ? <ErrorNotice error={byDay.error} /> : null}
          {byDay.loading && !total ? <Spinner label="Loading usage" /> : total ? <Totals total={total} /> : null}
        </div>
      </section>

      {byDay.data ? (
        <section aria-labelledby="charts-heading" className="mt-8">
          <h2 id="charts-heading" className="text-base font-semibold">
            Per {period}
          </h2>
          <DayCharts days={days} perDay={perDay} period={period} />
        </section>
      ) : null}

      <section aria-labelledby="models-heading" className="mt-8">
        <div className="flex flex-wrap items-baseline justify-between gap-2">
          <h2 id="models-heading" className="text-base font-semibold">
            By model
          </h2>
          <a className="link inline-flex items-center gap-1 text-sm" href={csv("model")} download>
            <DownloadIcon />
            Download CSV<span className="sr-only"> of usage by model</span>
          </a>
        </div>
        <div className="mt-3">
          {byModel.error ? <ErrorNotice error={byModel.error} /> : null}
          {byModel.loading && !byModel.data ? (
            <Spinner label="Loading usage by model" />
          ) : byModel.data ? (
            <GroupTable
              caption="Usage by model"
              dimension="Model"
              groups={byModel.data.groups.filter((g) => g.questions > 0 || g.answers > 0)}
              label={(g) => g.group.model ?? "—"}
              empty="No questions were asked in these days."
            />
          ) : null}
        </div>
      </section>

      {tenantWide ? (
        <section aria-labelledby="keys-heading" className="mt-8">
          <div className="flex flex-wrap items-baseline justify-between gap-2">
            <h2 id="keys-heading" className="text-base font-semibold">
              By key or person
            </h2>
            <a className="link inline-flex items-center gap-1 text-sm" href={csv("key,user")} download>
              <DownloadIcon />
              Download CSV<span className="sr-only"> of usage by key</span>
            </a>
          </div>
          <div className="mt-3">
            {byKey.error ? <ErrorNotice error={byKey.error} /> : null}
            {byKey.loading && !byKey.data ? (
              <Spinner label="Loading usage by key" />
            ) : byKey.data ? (
              <GroupTable
                caption="Usage by key or person"
                dimension="Key or person"
                groups={byKey.data.groups}
                label={(g) => {
                  const who = g.group.key ?? g.group.user ?? null;
                  return who ? nameOf(who) : "—";
                }}
                title={(g) => g.group.key ?? g.group.user ?? ""}
                empty="Nothing was used in these days."
                withIngest
              />
            ) : null}
            {!admin && byKey.data?.groups.length ? (
              <p className="muted mt-2 text-xs">Keys and people are shown as recorded (key:&lt;id&gt;, user:&lt;id&gt;).</p>
            ) : null}
          </div>
        </section>
      ) : null}

      {tenantWide ? (
        <section aria-labelledby="budgets-heading" className="mt-8">
          <h2 id="budgets-heading" className="text-base font-semibold">
            Budgets
          </h2>
          <p className="muted mt-1 text-sm">This period's use against each budget. A hard budget refuses past it; a soft one alerts.</p>
          <div className="mt-3">
            {budgets.error ? <ErrorNotice error={budgets.error} /> : null}
            {budgets.loading && !budgets.data ? (
              <Spinner label="Loading budgets" />
            ) : budgets.data && budgets.data.length === 0 ? (
              <EmptyState title="No budgets are set">Admins set them with PUT /v1/budgets/&#123;scope&#125;/&#123;metric&#125;/&#123;period&#125;.</EmptyState>
            ) : budgets.data ? (
              <ul className="grid gap-3 md:grid-cols-2">
                {budgets.data.map((b) => (
                  <BudgetCard key={`${b.scope}/${b.metric}/${b.period}`} budget={b} scopeName={b.scope === "tenant" ? "Workspace" : nameOf(b.scope)} />
                ))}
              </ul>
            ) : null}
          </div>
        </section>
      ) : null}
    </div>
  );
}

function RangeForm({ from, to }: { from: string; to: string }) {
  const [draftFrom, setDraftFrom] = useState(from);
  const [draftTo, setDraftTo] = useState(to);
  const [shown, setShown] = useState({ from, to });
  if (shown.from !== from || shown.to !== to) {
    setShown({ from, to });
    setDraftFrom(from);
    setDraftTo(to);
  }
  function go(nextFrom: string, nextTo: string) {
    navigate(`/admin/usage?${new URLSearchParams({ from: nextFrom, to: nextTo }).toString()}`, { replace: true });
  }
  function submit(event: FormEvent) {
    event.preventDefault();
    if (DAY_RE.test(draftFrom) && DAY_RE.test(draftTo)) go(draftFrom, draftTo);
  }
  const today = isoDay(new Date());
  return (
    <form onSubmit={submit} className="mt-4 flex flex-col gap-3 sm:flex-row sm:flex-wrap sm:items-end" aria-label="Days shown">
      <div>
        <label htmlFor="usage-from" className="label">
          From
        </label>
        <input id="usage-from" type="date" required className="input sm:w-44" value={draftFrom} max={draftTo || undefined} onChange={(e) => setDraftFrom(e.target.value)} />
      </div>
      <div>
        <label htmlFor="usage-to" className="label">
          To <span className="muted font-normal">(included)</span>
        </label>
        <input id="usage-to" type="date" required className="input sm:w-44" value={draftTo} min={draftFrom || undefined} onChange={(e) => setDraftTo(e.target.value)} />
      </div>
      <button type="submit" className="btn-primary">
        Show
      </button>
      <div className="flex flex-wrap gap-1" role="group" aria-label="Quick ranges">
        {[7, 30, 90].map((n) => (
          <button key={n} type="button" className="btn-ghost" onClick={() => go(addDays(today, -(n - 1)), today)}>
            Last {n} days
          </button>
        ))}
      </div>
    </form>
  );
}

function Cost({ usd, unpriced, answers }: { usd: string; unpriced: number; answers: number }) {
  if (answers > 0 && unpriced >= answers) {
    return <span className="text-amber-800 dark:text-amber-200">not priced ({plural(unpriced, "answer")})</span>;
  }
  return (
    <>
      {formatUsd(Number(usd))}
      {unpriced > 0 ? (
        <span className="block text-xs text-amber-800 dark:text-amber-200">+ {plural(unpriced, "unpriced answer")}</span>
      ) : null}
    </>
  );
}

function formatMs(ms: number): string {
  return ms < 1000 ? `${Math.max(1, Math.round(ms))} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function Stat({ label, value, detail }: { label: string; value: ReactNode; detail?: ReactNode }) {
  return (
    <div className="card p-4">
      <dt className="muted text-xs font-medium uppercase tracking-wide">{label}</dt>
      <dd className="mt-1 text-lg font-semibold tabular-nums text-zinc-900 dark:text-zinc-50">{value}</dd>
      {detail ? <dd className="muted mt-0.5 text-xs">{detail}</dd> : null}
    </div>
  );
}

function Totals({ total }: { total: UsageFigures }) {
  const searches = Object.values(total.searches).reduce((a, b) => a + b, 0);
  const latency = total.latency_ms_p50 !== null ? formatMs(total.latency_ms_p50) : "—";
  return (
    <dl className="grid grid-cols-2 gap-3 lg:grid-cols-4">
      <Stat
        label="Answers"
        value={formatInt(total.answers)}
        detail={`${plural(total.questions, "question")} · ${plural(total.failures, "failure")}`}
      />
      <Stat
        label="Tokens"
        value={formatInt(total.input_tokens + total.output_tokens)}
        detail={`${formatInt(total.input_tokens)} in · ${formatInt(total.output_tokens)} out`}
      />
      <Stat
        label="Cost as charged"
        value={<Cost usd={total.cost_charged_usd} unpriced={total.unpriced_answers} answers={total.answers} />}
        detail={
          total.unpriced_answers > 0
            ? "Unpriced answers had no price when answered: they are not in the cost."
            : "As recorded on each answer"
        }
      />
      <Stat
        label="At today's prices"
        value={<Cost usd={total.cost_current_usd} unpriced={total.unpriced_now} answers={total.answers} />}
        detail="The same tokens, priced now"
      />
      <Stat
        label="Answer latency"
        value={latency}
        detail={total.latency_ms_p95 !== null ? `median · 95th percentile ${formatMs(total.latency_ms_p95)}` : "median"}
      />
      <Stat
        label="Documents uploaded"
        value={formatInt(total.documents)}
        detail={`${formatBytes(total.bytes)} · ${plural(total.pages, "page")} · ${plural(total.chunks, "chunk")}`}
      />
      <Stat label="Embedding tokens" value={formatInt(total.embedding_tokens)} />
      <Stat
        label="Searches"
        value={formatInt(searches)}
        detail={Object.entries(total.searches)
          .filter(([, n]) => n > 0)
          .map(([mode, n]) => `${mode} ${formatInt(n)}`)
          .join(" · ") || undefined}
      />
    </dl>
  );
}

function periodLabel(start: string, period: Period, long = false): string {
  if (period === "month") return formatMonth(start);
  if (period === "week") return long ? `the week of ${formatDay(start, true)}` : formatDay(start);
  return formatDay(start, long);
}

function DayCharts({ days, perDay, period }: { days: string[]; perDay: Map<string, UsageFigures>; period: Period }) {
  const labels = days.map((d) => periodLabel(d, period));
  const pick = (f: (u: UsageFigures) => number) => days.map((d) => {
    const found = perDay.get(d);
    return found ? f(found) : 0;
  });
  const answers = pick((u) => u.answers);
  const failures = pick((u) => u.failures);
  const input = pick((u) => u.input_tokens);
  const output = pick((u) => u.output_tokens);
  const cost = pick((u) => Number(u.cost_charged_usd));
  const unpriced = pick((u) => u.unpriced_answers);
  const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);
  const busiest = (values: number[]) => {
    let best = -1;
    values.forEach((v, i) => {
      if (v > 0 && (best < 0 || v > (values[best] ?? 0))) best = i;
    });
    return best;
  };
  const peak = (values: number[], format: (n: number) => string) => {
    const i = busiest(values);
    return i < 0 ? "" : `; the most ${period === "month" ? "in" : "on"} ${periodLabel(days[i] ?? "", period, true)} (${format(values[i] ?? 0)})`;
  };
  const unpricedDays = unpriced.filter((n) => n > 0).length;
  return (
    <div className="mt-3 grid gap-4 lg:grid-cols-2">
      <BarChart
        title="Answers"
        summary={`${formatInt(sum(answers))} answers and ${formatInt(sum(failures))} failures over ${plural(days.length, period)}${peak(answers, formatInt)}.`}
        labels={labels}
        column={period === "day" ? "Day" : period === "week" ? "Week of" : "Month"}
        format={formatCompact}
        series={[
          { label: "Answers", values: answers, shape: "fill-indigo-600 dark:fill-indigo-400", swatch: "bg-indigo-600 dark:bg-indigo-400" },
          { label: "Failures", values: failures, shape: "fill-red-600 dark:fill-red-400", swatch: "bg-red-600 dark:bg-red-400" },
        ]}
      />
      <BarChart
        title="Tokens"
        summary={`${formatInt(sum(input) + sum(output))} tokens (${formatInt(sum(input))} in, ${formatInt(sum(output))} out)${peak(
          input.map((v, i) => v + (output[i] ?? 0)),
          formatInt,
        )}.`}
        labels={labels}
        column={period === "day" ? "Day" : period === "week" ? "Week of" : "Month"}
        format={formatCompact}
        series={[
          { label: "Input tokens", values: input, shape: "fill-indigo-600 dark:fill-indigo-400", swatch: "bg-indigo-600 dark:bg-indigo-400" },
          { label: "Output tokens", values: output, shape: "fill-teal-600 dark:fill-teal-400", swatch: "bg-teal-600 dark:bg-teal-400" },
        ]}
      />
      <div className="lg:col-span-2">
        <LineChart
          title="Cost as charged"
          summary={`${formatUsd(sum(cost))} charged${peak(cost, formatUsd)}.${
            unpricedDays ? ` ${plural(unpricedDays, period)} had unpriced answers, not in the cost.` : ""
          }`}
          labels={labels}
          format={formatUsd}
          series={{
            label: "Cost (USD)",
            values: cost,
            shape: "stroke-indigo-600 dark:stroke-indigo-400",
            swatch: "bg-indigo-600 dark:bg-indigo-400",
            dot: "fill-indigo-600 dark:fill-indigo-400",
          }}
          flags={unpriced.map((n) => n > 0)}
          flagLabel={`${period === "day" ? "Day" : period === "week" ? "Week" : "Month"} with unpriced answers (not in the cost)`}
          column={period === "day" ? "Day" : period === "week" ? "Week of" : "Month"}
        />
      </div>
    </div>
  );
}

function GroupTable({
  caption,
  dimension,
  groups,
  label,
  title,
  empty,
  withIngest = false,
}: {
  caption: string;
  dimension: string;
  groups: UsageFigures[];
  label: (g: UsageFigures) => string;
  title?: (g: UsageFigures) => string;
  empty: string;
  withIngest?: boolean;
}) {
  if (groups.length === 0) return <EmptyState title={empty} />;
  const sorted = [...groups].sort(
    (a, b) => b.answers - a.answers || b.input_tokens + b.output_tokens - (a.input_tokens + a.output_tokens),
  );
  return (
    <TableScroll label={caption} className="card">
      <table className="w-full text-sm">
        <caption className="sr-only">{caption}</caption>
        <TableHead
          columns={[
            { label: dimension },
            { label: "Answers", className: "text-right" },
            { label: "Failures", className: "text-right" },
            { label: "Tokens in / out", className: "text-right" },
            { label: "Cost as charged", className: "text-right" },
            { label: "At today's prices", className: "text-right" },
            withIngest && { label: "Uploads", className: "text-right" },
          ]}
        />
        <tbody className="divide-y divide-zinc-200 tabular-nums dark:divide-zinc-800">
          {sorted.map((g) => (
            <tr key={JSON.stringify(g.group)}>
              <th scope="row" className="table-cell break-words text-left font-medium" title={title?.(g)}>
                {label(g)}
              </th>
              <td className="table-cell text-right">{formatInt(g.answers)}</td>
              <td className="table-cell text-right">{formatInt(g.failures)}</td>
              <td className="table-cell whitespace-nowrap text-right">
                {formatInt(g.input_tokens)} / {formatInt(g.output_tokens)}
              </td>
              <td className="table-cell whitespace-nowrap text-right">
                <Cost usd={g.cost_charged_usd} unpriced={g.unpriced_answers} answers={g.answers} />
              </td>
              <td className="table-cell whitespace-nowrap text-right">
                <Cost usd={g.cost_current_usd} unpriced={g.unpriced_now} answers={g.answers} />
              </td>
              {withIngest ? (
                <td className="table-cell whitespace-nowrap text-right">
                  {formatInt(g.documents)}
                  {g.bytes ? <span className="muted block text-xs">{formatBytes(g.bytes)}</span> : null}
                </td>
              ) : null}
            </tr>
          ))}
        </tbody>
      </table>
    </TableScroll>
  );
}

const METRIC: Record<BudgetOut["metric"], string> = {
  tokens: "Tokens",
  cost_usd: "Cost as charged",
  documents: "Documents",
  bytes: "Stored bytes",
};
const PERIOD: Record<BudgetOut["period"], string> = { day: "per day", month: "per month", total: "in total" };

function budgetValue(metric: BudgetOut["metric"], value: number): string {
  if (metric === "cost_usd") return formatUsd(value);
  if (metric === "bytes") return formatBytes(value);
  return formatInt(value);
}

function BudgetCard({ budget, scopeName }: { budget: BudgetOut; scopeName: string }) {
  const used = Number(budget.used);
  const amount = Number(budget.amount);
  const ratio = amount > 0 ? used / amount : used > 0 ? Infinity : 0;
  const pct = Number.isFinite(ratio) ? Math.round(ratio * 1000) / 10 : 100;
  const tone =
    ratio >= 1
      ? "bg-red-600 dark:bg-red-400"
      : ratio >= 0.8
        ? "bg-amber-500 dark:bg-amber-400"
        : "bg-indigo-600 dark:bg-indigo-400";
  const title = `${METRIC[budget.metric]} ${PERIOD[budget.period]}`;
  const shown = used > 0 && pct < 0.1 ? "under 0.1" : String(pct);
  const text = `${budgetValue(budget.metric, used)} of ${budgetValue(budget.metric, amount)} used (${shown}%)`;
  return (
    <li className="card p-4">
      <div className="flex flex-wrap items-start justify-between gap-2">
        <div className="min-w-0">
          <p className="font-medium text-zinc-900 dark:text-zinc-100">{title}</p>
          <p className="muted break-all text-xs" title={budget.scope}>
            {scopeName}
          </p>
        </div>
        <span
          className={`rounded-full px-2 py-0.5 text-xs font-medium ring-1 ring-inset ${
            budget.hard
              ? "bg-red-50 text-red-800 ring-red-200 dark:bg-red-950/50 dark:text-red-200 dark:ring-red-900"
              : "bg-zinc-100 text-zinc-700 ring-zinc-200 dark:bg-zinc-800 dark:text-zinc-300 dark:ring-zinc-700"
          }`}
        >
          {budget.hard ? "hard" : "soft"}
        </span>
      </div>
      <div
        role="meter"
        aria-label={`${title}, ${scopeName}`}
        aria-valuemin={0}
        aria-valuemax={amount}
        aria-valuenow={Math.min(used, amount)}
        aria-valuetext={text}
        className="mt-3 h-2 w-full overflow-hidden rounded-full bg-zinc-200 dark:bg-zinc-800"
      >
        <div className={`h-full rounded-full ${tone}`} style={{ width: `${Math.min(100, Math.max(0, pct))}%` }} />
      </div>
      <p className="mt-2 text-sm tabular-nums">
        {text}
        {ratio >= 1 ? <span className="ml-1 font-medium text-red-700 dark:text-red-300">· {budget.hard ? "refusing" : "over"}</span> : null}
      </p>
      <p className="muted mt-0.5 text-xs">
        {budget.period === "total"
          ? "A quota: it does not reset."
          : `This ${budget.period} since ${formatDate(budget.period_start)}; resets ${formatDate(budget.resets_at)}.`}
      </p>
    </li>
  );
}
