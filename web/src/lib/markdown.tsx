// Markdown to React elements from marked's tokens: nothing is ever set as HTML. Raw HTML in
// the source is shown as text, links keep only http(s)/mailto targets, images become links,
// and `[n]` citation markers can be turned into elements by the caller.

import { Lexer, type Token, type Tokens } from "marked";
import { Fragment, type ReactNode } from "react";

import { decodeEntities } from "./highlight";

/** Renders marker `n`; `before` is the text just before it (what the marker cites). */
export type CitationRenderer = (n: number, key: string, before: string) => ReactNode | null;

interface Context {
  cite: CitationRenderer | null;
}

const SAFE_URL = /^(https?:|mailto:)/i;

function safeHref(href: string): string | null {
  const trimmed = href.trim();
  if (SAFE_URL.test(trimmed)) return trimmed;
  return null;
}

const CITATION = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g;

function textWithCitations(text: string, key: string, ctx: Context): ReactNode {
  const decoded = decodeEntities(text);
  if (!ctx.cite || !decoded.includes("[")) return decoded;
  const out: ReactNode[] = [];
  let cursor = 0;
  let cited = "";
  for (let m = CITATION.exec(decoded); m; m = CITATION.exec(decoded)) {
    const numbers = (m[1] ?? "").split(",").map((s) => Number(s.trim()));
    const gap = decoded.slice(cursor, m.index);
    const before = gap.trim() ? gap : cited; // "… [1] [2]": both cite the same text
    cited = before;
    const rendered = numbers.map((n, i) => ctx.cite?.(n, `${key}-c${m?.index}-${i}`, before) ?? null);
    if (rendered.some((r) => r === null)) continue; // not a known citation: leave as text
    if (m.index > cursor) out.push(decoded.slice(cursor, m.index));
    out.push(...rendered);
    cursor = m.index + m[0].length;
  }
  CITATION.lastIndex = 0;
  if (cursor === 0) return decoded;
  if (cursor < decoded.length) out.push(decoded.slice(cursor));
  return out.map((node, i) => <Fragment key={`${key}-t${i}`}>{node}</Fragment>);
}

function inline(tokens: Token[] | undefined, key: string, ctx: Context): ReactNode[] {
  if (!tokens) return [];
  return tokens.map((token, i) => inlineToken(token, `${key}.${i}`, ctx));
}

function inlineToken(token: Token, key: string, ctx: Context): ReactNode {
  switch (token.type) {
    case "text": {
      const t = token as Tokens.Text;
      if (t.tokens && t.tokens.length) return <Fragment key={key}>{inline(t.tokens, key, ctx)}</Fragment>;
      return <Fragment key={key}>{textWithCitations(t.text, key, ctx)}</Fragment>;
    }
    case "escape":
      return <Fragment key={key}>{token.raw.slice(1)}</Fragment>;
    case "strong":
      return <strong key={key}>{inline((token as Tokens.Strong).tokens, key, ctx)}</strong>;
    case "em":
      return <em key={key}>{inline((token as Tokens.Em).tokens, key, ctx)}</em>;
    case "del":
      return <del key={key}>{inline((token as Tokens.Del).tokens, key, ctx)}</del>;
    case "codespan":
      return <code key={key}>{(token as Tokens.Codespan).text}</code>;
    case "br":
      return <br key={key} />;
    case "link": {
      const t = token as Tokens.Link;
      const target = safeHref(t.href);
      const children = inline(t.tokens, key, { cite: null });
      if (!target) return <Fragment key={key}>{children}</Fragment>;
      return (
        <a key={key} href={target} target="_blank" rel="noopener noreferrer nofollow">
          {children}
        </a>
      );
    }
    case "image": {
      // Never load images named by model output or documents: show a link instead.
      const t = token as Tokens.Image;
      const target = safeHref(t.href);
      const label = t.text || "image";
      if (!target) return <Fragment key={key}>{label}</Fragment>;
      return (
        <a key={key} href={target} target="_blank" rel="noopener noreferrer nofollow">
          {label}
        </a>
      );
    }
    case "html":
      return <Fragment key={key}>{token.raw}</Fragment>;
    case "checkbox":
      return (
        <input
          key={key}
          type="checkbox"
          checked={(token as Tokens.Checkbox).checked}
          readOnly
          disabled
          className="mr-1 align-middle"
        />
      );
    default:
      return <Fragment key={key}>{"raw" in token ? String(token.raw) : ""}</Fragment>;
  }
}

function block(tokens: Token[], key: string, ctx: Context): ReactNode[] {
  return tokens.map((token, i) => blockToken(token, `${key}.${i}`, ctx));
}

function blockToken(token: Token, key: string, ctx: Context): ReactNode {
  switch (token.type) {
    case "space":
    case "def":
      return null;
    case "paragraph":
      return <p key={key}>{inline((token as Tokens.Paragraph).tokens, key, ctx)}</p>;
    case "heading": {
      const t = token as Tokens.Heading;
      const children = inline(t.tokens, key, ctx);
      // Answers sit under the page's own headings: render them one size, as emphasis.
      const level = Math.min(6, Math.max(3, t.depth + 2));
      const Tag = `h${level}` as "h3" | "h4" | "h5" | "h6";
      return <Tag key={key}>{children}</Tag>;
    }
    case "code":
      return (
        <pre key={key}>
          <code>{(token as Tokens.Code).text}</code>
        </pre>
      );
    case "blockquote":
      return <blockquote key={key}>{block((token as Tokens.Blockquote).tokens, key, ctx)}</blockquote>;
    case "hr":
      return <hr key={key} />;
    case "list": {
      const t = token as Tokens.List;
      const items = t.items.map((item, i) => (
        <li key={`${key}.${i}`}>{block(item.tokens, `${key}.${i}`, ctx)}</li>
      ));
      if (t.ordered) {
        const start = typeof t.start === "number" && t.start !== 1 ? t.start : undefined;
        return (
          <ol key={key} start={start}>
            {items}
          </ol>
        );
      }
      return <ul key={key}>{items}</ul>;
    }
    case "table": {
      const t = token as Tokens.Table;
      const align = (a: Tokens.TableCell["align"]) => (a ? { textAlign: a } : undefined);
      return (
        <div key={key} className="overflow-x-auto">
          <table>
            <thead>
              <tr>
                {t.header.map((cell, i) => (
                  <th key={i} style={align(cell.align)}>
                    {inline(cell.tokens, `${key}.h${i}`, ctx)}
                  </th>
                ))}
              </tr>
            </thead>
            <tbody>
              {t.rows.map((row, r) => (
                <tr key={r}>
                  {row.map((cell, c) => (
                    <td key={c} style={align(cell.align)}>
                      {inline(cell.tokens, `${key}.${r}.${c}`, ctx)}
                    </td>
                  ))}
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      );
    }
    case "html":
      // Raw HTML is shown as the text it is, never interpreted.
      return (
        <p key={key} className="whitespace-pre-wrap">
          {token.raw}
        </p>
      );
    case "text": {
      const t = token as Tokens.Text;
      return <Fragment key={key}>{t.tokens ? inline(t.tokens, key, ctx) : textWithCitations(t.text, key, ctx)}</Fragment>;
    }
    default:
      return <p key={key}>{"raw" in token ? String(token.raw) : ""}</p>;
  }
}

export function Markdown({
  source,
  cite = null,
}: {
  source: string;
  cite?: CitationRenderer | null;
}): ReactNode {
  const tokens = Lexer.lex(source, { gfm: true, breaks: false });
  return <>{block(tokens, "md", { cite })}</>;
}
