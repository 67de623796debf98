// Light/dark theme: follows prefers-color-scheme until the user picks one with the toggle,
// which is remembered in localStorage. One store, so every toggle on the page agrees.

import { useSyncExternalStore } from "react";

export type Theme = "light" | "dark";
const KEY = "kf-theme";
const media = () => window.matchMedia("(prefers-color-scheme: dark)");
const listeners = new Set<() => void>();

function stored(): Theme | null {
  try {
    const value = window.localStorage.getItem(KEY);
    return value === "light" || value === "dark" ? value : null;
  } catch {
    return null;
  }
}

export function effectiveTheme(): Theme {
  return stored() ?? (media().matches ? "dark" : "light");
}

export function applyTheme(theme: Theme): void {
  const root = document.documentElement;
  root.classList.toggle("dark", theme === "dark");
  root.style.colorScheme = theme;
}

function changed(): void {
  applyTheme(effectiveTheme());
  for (const listener of listeners) listener();
}

function subscribe(listener: () => void): () => void {
  if (listeners.size === 0) {
    media().addEventListener("change", changed);
    window.addEventListener("storage", changed);
  }
  listeners.add(listener);
  return () => {
    listeners.delete(listener);
    if (listeners.size === 0) {
      media().removeEventListener("change", changed);
      window.removeEventListener("storage", changed);
    }
  };
}

export function useTheme(): [Theme, () => void] {
  const theme = useSyncExternalStore(subscribe, effectiveTheme);
  const toggle = () => {
    const next: Theme = theme === "dark" ? "light" : "dark";
    try {
      window.localStorage.setItem(KEY, next);
    } catch {
      // storage unavailable (private mode): the choice lasts for this page
      applyTheme(next);
      return;
    }
    changed();
  };
  return [theme, toggle];
}
