// Hand-rolled SVG charts (no chart library): a stacked bar chart and a line chart over a
// run of labelled points (days). Each is a <figure>: the picture is an image with a
// summary for screen readers, and the exact figures are in a table under "Show the data".

import { useId, useLayoutEffect, useRef, useState, type ReactNode, type RefObject } from "react";

export interface Series {
  label: string;
  values: number[];
  /** Tailwind classes for the shape (fill for bars, stroke for lines) and its legend swatch. */
  shape: string;
  swatch: string;
  /** Line charts: the points' fill. */
  dot?: string;
}

const HEIGHT = 180;
const PAD = { top: 10, right: 8, bottom: 24, left: 52 };

/** The container's width in CSS pixels (0 before it is laid out). */
function useWidth<T extends HTMLElement>(): [RefObject<T>, number] {
  const ref = useRef<T>(null);
  const [width, setWidth] = useState(0);
  useLayoutEffect(() => {
    const element = ref.current;
    if (!element) return;
    setWidth(element.clientWidth);
    if (typeof ResizeObserver === "undefined") return;
    const observer = new ResizeObserver((entries) => {
      const box = entries[0]?.contentRect;
      if (box) setWidth(Math.floor(box.width));
    });
    observer.observe(element);
    return () => observer.disconnect();
  }, []);
  return [ref, width];
}

/** A round upper bound for the axis: 1, 2, 2.5 or 5 × 10^n. */
export function niceMax(value: number): number {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

/** Which of `count` x labels to print so that they do not collide. */
function labelEvery(count: number, plotWidth: number): number {
  const room = Math.max(1, Math.floor(plotWidth / 56));
  return Math.max(1, Math.ceil(count / room));
}

function Frame({
  title,
  summary,
  series,
  labels,
  format,
  children,
  note,
  column = "Day",
}: {
  title: string;
  summary: string;
  series: Series[];
  labels: string[];
  format: (value: number) => string;
  children: (width: number) => ReactNode;
  note?: ReactNode;
  column?: string;
}) {
  const [ref, width] = useWidth<HTMLDivElement>();
  const id = useId();
  return (
    <figure className="card min-w-0 p-4" aria-labelledby={`${id}-title`}>
      <figcaption>
        <h3 id={`${id}-title`} className="text-sm font-semibold">
          {title}
        </h3>
        <p className="muted mt-0.5 text-xs">{summary}</p>
      </figcaption>
      {series.length > 1 || note ? (
        <ul className="mt-2 flex flex-wrap gap-x-4 gap-y-1 text-xs text-zinc-700 dark:text-zinc-300" aria-hidden="true">
          {series.length > 1
            ? series.map((s) => (
                <li key={s.label} className="inline-flex items-center gap-1.5">
                  <span className={`inline-block h-2.5 w-2.5 rounded-sm ${s.swatch}`} />
                  {s.label}
                </li>
              ))
            : null}
          {note}
        </ul>
      ) : null}
      <div ref={ref} className="mt-3 w-full">
        {width > 0 ? (
          <svg
            role="img"
            aria-label={`${title}. ${summary}`}
            width={width}
            height={HEIGHT}
            viewBox={`0 0 ${width} ${HEIGHT}`}
            className="block overflow-visible"
          >
            {children(width)}
          </svg>
        ) : (
          <div style={{ height: HEIGHT }} />
        )}
      </div>
      <details className="mt-2 text-xs">
        <summary className="link inline-block cursor-pointer rounded">
          Show the data<span className="sr-only">: {title}</span>
        </summary>
        <div className="mt-2 max-h-64 overflow-auto">
          <table className="w-full text-left text-xs tabular-nums">
            <caption className="sr-only">{title}</caption>
            <thead>
              <tr className="border-b border-zinc-200 dark:border-zinc-800">
                <th scope="col" className="py-1 pr-3 font-medium">
                  {column}
                </th>
                {series.map((s) => (
                  <th key={s.label} scope="col" className="py-1 pr-3 text-right font-medium">
                    {s.label}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {labels.map((label, i) => (
                <tr key={label} className="border-b border-zinc-100 dark:border-zinc-800/60">
                  <th scope="row" className="py-1 pr-3 font-normal">
                    {label}
                  </th>
                  {series.map((s) => (
                    <td key={s.label} className="py-1 pr-3 text-right">
                      {format(s.values[i] ?? 0)}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </details>
    </figure>
  );
}

function Axes({
  width,
  max,
  labels,
  format,
}: {
  width: number;
  max: number;
  labels: string[];
  format: (value: number) => string;
}) {
  const plotWidth = width - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const ticks = [0, max / 2, max];
  const every = labelEvery(labels.length, plotWidth);
  const step = labels.length ? plotWidth / labels.length : plotWidth;
  return (
    <g aria-hidden="true">
      {ticks.map((tick) => {
        const y = PAD.top + plotHeight - (tick / max) * plotHeight;
        return (
          <g key={tick}>
            <line
              x1={PAD.left}
              x2={width - PAD.right}
              y1={y}
              y2={y}
              className={tick === 0 ? "stroke-zinc-400 dark:stroke-zinc-600" : "stroke-zinc-200 dark:stroke-zinc-800"}
              strokeDasharray={tick === 0 ? undefined : "3 3"}
            />
            <text
              x={PAD.left - 6}
              y={y}
              dy="0.32em"
              textAnchor="end"
              className="fill-zinc-600 text-[10px] dark:fill-zinc-400"
            >
              {format(tick)}
            </text>
          </g>
        );
      })}
      {labels.map((label, i) =>
        i % every === 0 ? (
          <text
            key={label}
            x={PAD.left + step * (i + 0.5)}
            y={HEIGHT - 6}
            textAnchor="middle"
            className="fill-zinc-600 text-[10px] dark:fill-zinc-400"
          >
            {label}
          </text>
        ) : null,
      )}
    </g>
  );
}

/** Bars per label; several series are stacked. */
export function BarChart({
  title,
  summary,
  labels,
  series,
  format,
  column,
}: {
  title: string;
  summary: string;
  labels: string[];
  series: Series[];
  format: (value: number) => string;
  column?: string;
}) {
  const totals = labels.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] ?? 0), 0));
  const max = niceMax(Math.max(0, ...totals));
  return (
    <Frame title={title} summary={summary} series={series} labels={labels} format={format} column={column}>
      {(width) => {
        const plotWidth = width - PAD.left - PAD.right;
        const plotHeight = HEIGHT - PAD.top - PAD.bottom;
        const step = labels.length ? plotWidth / labels.length : plotWidth;
        const barWidth = Math.max(1, Math.min(28, step * 0.7));
        return (
          <>
            <Axes width={width} max={max} labels={labels} format={format} />
            <g>
              {labels.map((label, i) => {
                let base = PAD.top + plotHeight;
                const x = PAD.left + step * i + (step - barWidth) / 2;
                return (
                  <g key={label}>
                    <title>
                      {label}: {series.map((s) => `${format(s.values[i] ?? 0)} ${s.label.toLowerCase()}`).join(", ")}
                    </title>
                    {/* A full-height transparent target so the tooltip shows over empty days too. */}
                    <rect x={PAD.left + step * i} y={PAD.top} width={step} height={plotHeight} fill="transparent" />
                    {series.map((s) => {
                      const value = s.values[i] ?? 0;
                      if (value <= 0) return null;
                      const h = Math.max(1, (value / max) * plotHeight);
                      base -= h;
                      return <rect key={s.label} x={x} y={base} width={barWidth} height={h} rx={1.5} className={s.shape} />;
                    })}
                  </g>
                );
              })}
            </g>
          </>
        );
      }}
    </Frame>
  );
}

/** A line through the points; `flags` marks points (a triangle) that need a footnote. */
export function LineChart({
  title,
  summary,
  labels,
  series,
  format,
  flags,
  flagLabel,
  column,
}: {
  title: string;
  summary: string;
  labels: string[];
  series: Series;
  format: (value: number) => string;
  flags?: boolean[];
  flagLabel?: string;
  column?: string;
}) {
  const max = niceMax(Math.max(0, ...series.values));
  const note =
    flags?.some(Boolean) && flagLabel ? (
      <li className="inline-flex items-center gap-1.5">
        <svg width="10" height="10" viewBox="0 0 10 10" aria-hidden="true">
          <path d="M5 1 9 9H1Z" className="fill-amber-600 dark:fill-amber-400" />
        </svg>
        {flagLabel}
      </li>
    ) : null;
  return (
    <Frame title={title} summary={summary} series={[series]} labels={labels} format={format} note={note} column={column}>
      {(width) => {
        const plotWidth = width - PAD.left - PAD.right;
        const plotHeight = HEIGHT - PAD.top - PAD.bottom;
        const step = labels.length ? plotWidth / labels.length : plotWidth;
        const point = (i: number) => ({
          x: PAD.left + step * (i + 0.5),
          y: PAD.top + plotHeight - ((series.values[i] ?? 0) / max) * plotHeight,
        });
        const path = labels.map((_, i) => {
          const p = point(i);
          return `${i === 0 ? "M" : "L"}${p.x.toFixed(1)},${p.y.toFixed(1)}`;
        });
        return (
          <>
            <Axes width={width} max={max} labels={labels} format={format} />
            <path d={path.join("")} fill="none" strokeWidth={2} strokeLinejoin="round" className={series.shape} />
            {labels.map((label, i) => {
              const p = point(i);
              const flagged = flags?.[i] ?? false;
              return (
                <g key={label}>
                  <title>
                    {label}: {format(series.values[i] ?? 0)}
                    {flagged && flagLabel ? ` (${flagLabel.toLowerCase()})` : ""}
                  </title>
                  <rect x={PAD.left + step * i} y={PAD.top} width={step} height={plotHeight} fill="transparent" />
                  {labels.length <= 62 ? (
                    <circle cx={p.x} cy={p.y} r={2.5} className={series.dot ?? ""} />
                  ) : null}
                  {flagged ? (
                    <path
                      d={`M${p.x},${p.y - 12} l5,9 h-10Z`}
                      className="fill-amber-600 dark:fill-amber-400"
                    />
                  ) : null}
                </g>
              );
            })}
          </>
        );
      }}
    </Frame>
  );
}
