// Preloaded into a gateway process by test/faults/process.test.ts (E3): SIGUSR2 blocks the event
// loop with a busy loop for QGA_TEST_STALL_MS milliseconds — a real stall, not a stopped process.
process.on('SIGUSR2', () => {
  const end = Date.now() + Number(process.env.QGA_TEST_STALL_MS ?? 0);
  while (Date.now() < end) {
    // busy
  }
});
