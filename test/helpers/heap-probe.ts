/**
 * Preloaded (`node --expose-gc -r heap-probe.js ...`) into a process under
 * measurement: on the IPC message 'heap' it runs a full garbage collection
 * and answers with process.memoryUsage(), so that a test reads the memory a
 * process retains rather than its garbage of the moment.
 */
process.on('message', (m: unknown) => {
  if (m !== 'heap' || !process.send) return;
  (globalThis as { gc?: () => void }).gc?.();
  process.send({ heap: process.memoryUsage() });
});
