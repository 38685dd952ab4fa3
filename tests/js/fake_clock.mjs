// A clock for the helper's tests: time moves only when a test advances it (or when a stand-in
// server "takes" time by moving `time` forward itself).
export const settle = () => new Promise((resolve) => setImmediate(resolve));

export class FakeClock {
  constructor() {
    this.time = 0;
    this.timers = new Map();
    this.nextId = 1;
  }

  now() {
    return this.time;
  }

  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, fn });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  /** Run the timers due within `ms`, in time order, letting each one's promises settle. */
  async advance(ms) {
    const until = this.time + ms;
    for (;;) {
      const due = [...this.timers.entries()].filter(([, t]) => t.at <= until).sort((a, b) => a[1].at - b[1].at);
      if (due.length === 0) break;
      const [id, timer] = due[0];
      this.timers.delete(id);
      this.time = Math.max(this.time, timer.at);
      await timer.fn();
      await settle();
    }
    this.time = Math.max(this.time, until);
  }
}
