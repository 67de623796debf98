// Small data hooks shared by the pages.

import { useCallback, useEffect, useRef, useState } from "react";

import { api, type Query } from "./api";
import { can, useAuth } from "./auth";
import type { KeyList, UserList } from "./types";

export interface Loaded<T> {
  data: T | null;
  error: unknown;
  loading: boolean;
  /** Load again (quietly: the data on screen stays until the answer arrives). */
  reload: (extra?: Query) => Promise<void>;
}

/**
 * GET `path` with `query` (null: nothing to load), again whenever either changes; earlier
 * answers that arrive late are dropped.
 */
export function useApi<T>(path: string | null, query?: Query): Loaded<T> {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [loading, setLoading] = useState(path !== null);
  const key = JSON.stringify(query ?? {});
  const generation = useRef(0);

  const load = useCallback(
    async (extra?: Query, signal?: AbortSignal) => {
      if (path === null) return;
      const mine = ++generation.current;
      try {
        const params = { ...(JSON.parse(key) as Query), ...extra };
        const answer = await api.get<T>(path, params, signal);
        if (mine !== generation.current) return;
        setData(answer);
        setError(null);
      } catch (failure) {
        if (signal?.aborted || mine !== generation.current) return;
        setError(failure);
      } finally {
        if (mine === generation.current) setLoading(false);
      }
    },
    [path, key],
  );

  useEffect(() => {
    if (path === null) {
      setData(null);
      setLoading(false);
      return;
    }
    const controller = new AbortController();
    setLoading(true);
    void load(undefined, controller.signal);
    return () => controller.abort();
  }, [load, path]);

  const reload = useCallback((extra?: Query) => load(extra), [load]);
  return { data, error, loading, reload };
}

/** Call `tick` every `ms` while the page is visible (and once when it becomes visible). */
export function useInterval(tick: () => void, ms: number, enabled = true): void {
  const saved = useRef(tick);
  saved.current = tick;
  useEffect(() => {
    if (!enabled) return;
    const timer = window.setInterval(() => {
      if (!document.hidden) saved.current();
    }, ms);
    const onVisible = () => {
      if (!document.hidden) saved.current();
    };
    document.addEventListener("visibilitychange", onVisible);
    return () => {
      window.clearInterval(timer);
      document.removeEventListener("visibilitychange", onVisible);
    };
  }, [ms, enabled]);
}

// ------------------------------------------------------------------ actor names

let names: Promise<Map<string, string>> | null = null;

/** After issuing a key or inviting someone: look the names up again next time. */
export function forgetActorNames(): void {
  names = null;
}

async function loadNames(): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  const [keys, users] = await Promise.allSettled([
    api.get<KeyList>("/v1/keys", { limit: 200 }),
    api.get<UserList>("/v1/users"),
  ]);
  if (keys.status === "fulfilled") {
    for (const key of keys.value.items) found.set(`key:${key.id}`, `key “${key.name}”`);
  }
  if (users.status === "fulfilled") {
    for (const user of users.value.users) found.set(`user:${user.id}`, user.email);
  }
  return found;
}

/**
 * A readable name for an actor ("key:<id>" → the key's name, "user:<id>" → the e-mail):
 * admins may list keys and users; for everyone else the actor stays as recorded.
 */
export function useActorNames(): (actor: string) => string {
  const { me } = useAuth();
  const admin = can(me?.role, "admin");
  const [known, setKnown] = useState<Map<string, string>>(new Map());
  useEffect(() => {
    if (!admin) return;
    let live = true;
    names ??= loadNames();
    names
      .then((found) => {
        if (live) setKnown(found);
      })
      .catch(() => {
        names = null;
      });
    return () => {
      live = false;
    };
  }, [admin]);
  return useCallback(
    (actor: string) => {
      const name = known.get(actor) ?? actor;
      if (me && (actor === `user:${me.id}` || actor === `key:${me.id}`)) return `${me.email ?? name} (you)`;
      return name;
    },
    [known, me],
  );
}
