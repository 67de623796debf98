import type { ReactNode } from "react";

import { Logo } from "./icons";
import { ThemeToggle } from "./Shell";

export function AuthLayout({ title, subtitle, children }: { title: string; subtitle?: string; children: ReactNode }) {
  return (
    <div className="flex min-h-screen flex-col bg-zinc-50 dark:bg-zinc-950">
      <header className="flex items-center justify-between px-4 py-3 sm:px-6">
        <span className="flex items-center gap-2 font-semibold tracking-tight">
          <Logo />
          Knowledge Foundry
        </span>
        <ThemeToggle />
      </header>
      <main id="main" className="flex flex-1 items-start justify-center px-4 pb-16 pt-8 sm:pt-16">
        <div className="w-full max-w-sm">
          <h1 className="text-2xl font-semibold tracking-tight text-zinc-900 dark:text-zinc-50">{title}</h1>
          {subtitle ? <p className="muted mt-1">{subtitle}</p> : null}
          <div className="card mt-6 p-5 sm:p-6">{children}</div>
        </div>
      </main>
    </div>
  );
}
