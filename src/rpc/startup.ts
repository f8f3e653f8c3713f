/** What a daemon tells the `rdbg connect` that started it, over the IPC channel. */
export type StartupMessage =
  | { ready: true; socks?: string }
  | { ready: false; code: string; message: string; hint?: string };
