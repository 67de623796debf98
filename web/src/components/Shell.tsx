import { useEffect, useState, type ReactNode } from "react";

import { can, homePath, useAuth } from "../lib/auth";
import { Link, useLocation } from "../lib/router";
import { useTheme } from "../lib/theme";
import type { Role } from "../lib/types";
import {
  ChartIcon,
  ChatIcon,
  CloseIcon,
  DocIcon,
  Logo,
  ListIcon,
  LogoutIcon,
  MenuIcon,
  MoonIcon,
  SearchIcon,
  ShieldIcon,
  SunIcon,
} from "./icons";

interface NavItem {
  to: string;
  label: string;
  icon: ReactNode;
  active: (path: string) => boolean;
}

const CHAT: NavItem = {
  to: "/",
  label: "Chat",
  icon: <ChatIcon />,
  active: (p) => p === "/" || p === "/chat" || p.startsWith("/chat/"),
};
const DOCUMENTS: NavItem = {
  to: "/documents",
  label: "Documents",
  icon: <DocIcon />,
  active: (p) => p === "/documents" || p.startsWith("/documents/"),
};
const SEARCH: NavItem = { to: "/search", label: "Search", icon: <SearchIcon />, active: (p) => p === "/search" };
const USAGE: NavItem = { to: "/admin/usage", label: "Usage", icon: <ChartIcon />, active: (p) => p === "/admin/usage" };
const AUDIT: NavItem = { to: "/admin/audit", label: "Audit", icon: <ListIcon />, active: (p) => p === "/admin/audit" };
const ADMIN: NavItem = {
  to: "/admin/users",
  label: "Admin",
  icon: <ShieldIcon />,
  active: (p) => (p === "/admin" || p.startsWith("/admin/")) && p !== "/admin/usage" && p !== "/admin/audit",
};

/** The pages the role may use, and only those (admin: all; auditor: Audit; analyst: Usage). */
export function navFor(role: Role | undefined): NavItem[] {
  const items: NavItem[] = [];
  if (can(role, "read")) items.push(CHAT, DOCUMENTS, SEARCH);
  if (can(role, "usage")) items.push(USAGE);
  if (can(role, "audit")) items.push(AUDIT);
  if (can(role, "admin")) items.push(ADMIN);
  return items;
}

export function ThemeToggle() {
  const [theme, toggle] = useTheme();
  const next = theme === "dark" ? "light" : "dark";
  return (
    <button
      type="button"
      className="btn-icon"
      onClick={toggle}
      aria-label={`Switch to ${next} theme`}
      title={`Switch to ${next} theme`}
    >
      {theme === "dark" ? <SunIcon /> : <MoonIcon />}
    </button>
  );
}

export function Shell({ children, fullHeight = false }: { children: ReactNode; fullHeight?: boolean }) {
  const { me, signOut } = useAuth();
  const { path } = useLocation();
  const [menuOpen, setMenuOpen] = useState(false);
  const items = navFor(me?.role);

  useEffect(() => setMenuOpen(false), [path]);
  useEffect(() => {
    if (!menuOpen) return;
    const close = (event: KeyboardEvent) => {
      if (event.key === "Escape") setMenuOpen(false);
    };
    window.addEventListener("keydown", close);
    return () => window.removeEventListener("keydown", close);
  }, [menuOpen]);

  const nav = (
    <nav aria-label="Main" className="flex flex-col gap-0.5 px-2">
      {items.map((item) => {
        const active = item.active(path);
        return (
          <Link
            key={item.to}
            to={item.to}
            aria-current={active ? "page" : undefined}
            className={`flex items-center gap-2.5 rounded-md px-2.5 py-2 text-sm font-medium transition-colors ${
              active
                ? "bg-zinc-200/70 text-zinc-900 dark:bg-zinc-800 dark:text-zinc-50"
                : "text-zinc-700 hover:bg-zinc-100 hover:text-zinc-900 dark:text-zinc-300 dark:hover:bg-zinc-800/60 dark:hover:text-zinc-50"
            }`}
          >
            {item.icon}
            {item.label}
          </Link>
        );
      })}
    </nav>
  );

  const account = (
    <div className="border-t border-zinc-200 px-3 py-3 dark:border-zinc-800">
      <div className="flex items-center gap-2">
        <div
          aria-hidden="true"
          className="flex h-8 w-8 shrink-0 items-center justify-center rounded-full bg-indigo-100 text-xs font-semibold uppercase text-indigo-800 dark:bg-indigo-500/20 dark:text-indigo-200"
        >
          {(me?.email ?? me?.id ?? "?").slice(0, 1)}
        </div>
        <div className="min-w-0 flex-1">
          <p className="truncate text-sm font-medium text-zinc-900 dark:text-zinc-100" title={me?.email ?? ""}>
            {me?.email ?? "API key"}
          </p>
          <p className="truncate text-xs text-zinc-600 dark:text-zinc-400" title={`Workspace ${me?.tenant_id ?? ""}`}>
            {me?.role}
          </p>
        </div>
      </div>
      <div className="mt-3 flex items-center justify-between">
        <button type="button" className="btn-ghost -ml-2 px-2" onClick={() => void signOut()}>
          <LogoutIcon />
          Sign out
        </button>
        <ThemeToggle />
      </div>
    </div>
  );

  const brand = (
    <Link to={homePath(me?.role)} className="flex items-center gap-2 rounded-md font-semibold tracking-tight text-zinc-900 dark:text-zinc-50">
      <Logo />
      <span>Knowledge Foundry</span>
    </Link>
  );

  return (
    <div className="flex min-h-screen flex-col lg:flex-row">
      <a
        href="#main"
        className="sr-only z-50 rounded-md bg-white px-3 py-2 text-sm font-medium text-zinc-900 focus:not-sr-only focus:absolute focus:left-3 focus:top-3 dark:bg-zinc-900 dark:text-zinc-100"
      >
        Skip to content
      </a>

      {/* Narrow screens: a top bar with a menu button. */}
      <header className="sticky top-0 z-30 flex h-14 items-center justify-between border-b border-zinc-200 bg-white/90 px-3 backdrop-blur dark:border-zinc-800 dark:bg-zinc-950/90 lg:hidden">
        {brand}
        <button
          type="button"
          className="btn-icon"
          aria-expanded={menuOpen}
          aria-controls="mobile-menu"
          aria-label={menuOpen ? "Close menu" : "Open menu"}
          onClick={() => setMenuOpen((open) => !open)}
        >
          {menuOpen ? <CloseIcon width={20} height={20} /> : <MenuIcon width={20} height={20} />}
        </button>
      </header>
      {menuOpen ? (
        <div className="fixed inset-0 top-14 z-20 lg:hidden">
          <button
            type="button"
            tabIndex={-1}
            aria-hidden="true"
            className="absolute inset-0 h-full w-full cursor-default bg-zinc-950/40"
            onClick={() => setMenuOpen(false)}
          />
          <aside
            id="mobile-menu"
            aria-label="Menu"
            className="relative flex max-h-full flex-col gap-3 overflow-y-auto border-b border-zinc-200 bg-white pt-3 shadow-lg dark:border-zinc-800 dark:bg-zinc-950"
          >
            {nav}
            {account}
          </aside>
        </div>
      ) : null}

      {/* Wide screens: a sidebar. */}
      <aside className="sticky top-0 hidden h-screen w-60 shrink-0 flex-col border-r border-zinc-200 bg-zinc-50 dark:border-zinc-800 dark:bg-zinc-900/40 lg:flex">
        <div className="flex h-14 items-center px-4">{brand}</div>
        <div className="flex-1 overflow-y-auto pt-2">{nav}</div>
        {account}
      </aside>

      <main
        id="main"
        tabIndex={-1}
        className={`min-w-0 flex-1 focus:outline-none ${fullHeight ? "flex h-[calc(100dvh-3.5rem)] flex-col lg:h-screen" : ""}`}
      >
        {children}
      </main>
    </div>
  );
}
