// Unit tests of the JS helper's parts that need no server, on an explicit clock and explicit
// randomness: backoff, latency classes, dedupe memory, ack batching, seq ordering.
// Run: node --test tests/js/ (tests/unit/test_js_helper.py runs it under pytest).
import assert from "node:assert/strict";
import { test } from "node:test";

import { FakeClock } from "./fake_clock.mjs";

import {
  AckBatcher,
  DEFAULTS,
  RecentIds,
  StreamOrder,
  backoffDelay,
  classifyLatency,
} from "../../hubs/static/conduit/conduit.mjs";

test("backoff: full jitter under a ceiling that doubles up to the maximum", () => {
  const options = { initialDelayMs: 500, maxDelayMs: 30000, factor: 2 };
  const top = () => 0.999999;
  assert.deepEqual(
    [0, 1, 2, 3, 6, 7, 20].map((n) => backoffDelay(n, options, top)),
    [499, 999, 1999, 3999, 29999, 29999, 29999],
  );
  assert.equal(backoffDelay(5, options, () => 0), 0); // full jitter reaches down to zero
  assert.equal(backoffDelay(3, options, () => 0.5), 2000);
  assert.equal(backoffDelay(1000, options, top), 29999); // no overflow on a long outage
});

test("latency classes: good, fair, poor, and poor without an answer", () => {
  assert.deepEqual(
    [0, 149, 150, 499, 500, 5000, null].map((ms) => classifyLatency(ms)),
    ["good", "good", "fair", "fair", "poor", "poor", "poor"],
  );
  assert.equal(classifyLatency(80, { goodMs: 50, fairMs: 100 }), "fair");
});

test("recent ids forget the oldest beyond their size", () => {
  const ids = new RecentIds(3);
  for (const id of ["a", "b", "c", "a", "d"]) ids.add(id);
  assert.deepEqual(["a", "b", "c", "d"].map((id) => ids.has(id)), [false, true, true, true]);
  ids.delete("c"); // a message whose handler failed: its retry must be processed
  assert.equal(ids.has("c"), false);
});

test("acks: gathered for the window, then one batch", async () => {
  const clock = new FakeClock();
  const batches = [];
  const acks = new AckBatcher({ windowMs: 100, maxBatch: 1000, clock, flush: (ids) => batches.push(ids) });
  acks.add("m1");
  await clock.advance(60);
  acks.add("m2");
  assert.deepEqual(batches, []);
  await clock.advance(40); // 100 ms after the first id
  assert.deepEqual(batches, [["m1", "m2"]]);
  acks.add("m3");
  await clock.advance(99);
  assert.equal(batches.length, 1);
  await clock.advance(1);
  assert.deepEqual(batches, [["m1", "m2"], ["m3"]]);
  await clock.advance(1000);
  assert.equal(batches.length, 2); // nothing gathered, nothing sent
});

test("acks: a full batch goes at once, and window 0 sends each id", () => {
  const clock = new FakeClock();
  const batches = [];
  const acks = new AckBatcher({ windowMs: 100, maxBatch: 3, clock, flush: (ids) => batches.push(ids) });
  for (const id of ["a", "b", "c", "d"]) acks.add(id);
  assert.deepEqual(batches, [["a", "b", "c"]]);
  acks.flush(); // what stop() does
  assert.deepEqual(batches, [["a", "b", "c"], ["d"]]);
  assert.equal(clock.timers.size, 0);

  const each = [];
  const eager = new AckBatcher({ windowMs: 0, clock, flush: (ids) => each.push(ids) });
  eager.add("x");
  eager.add("y");
  assert.deepEqual(each, [["x"], ["y"]]);
  assert.deepEqual(DEFAULTS.ack, { windowMs: 100, maxBatch: 1000 });
});

const msg = (seq, epoch = "e1", id = `m${seq}`) => ({ seq, epoch, messageId: id });
const seqs = (payloads) => payloads.map((p) => p.seq);

test("order: in seq order; what comes ahead of a gap waits for it", () => {
  const order = new StreamOrder();
  assert.deepEqual(seqs(order.accept(msg(5))), [5]); // the first message sets the position
  assert.deepEqual(seqs(order.accept(msg(6))), [6]);
  assert.deepEqual(seqs(order.accept(msg(8))), []);
  assert.deepEqual(seqs(order.accept(msg(9))), []);
  assert.equal(order.hasGap, true);
  assert.deepEqual(seqs(order.accept(msg(8, "e1", "copy-of-8"))), []); // a second copy of a held slot
  assert.deepEqual(seqs(order.accept(msg(7))), [7, 8, 9]);
  assert.equal(order.hasGap, false);
  assert.deepEqual(seqs(order.accept(msg(6, "e1", "m6"))), [6]); // a retry of a passed slot: deduped by id later
  assert.deepEqual(order.accept({ messageId: "x" }), [{ messageId: "x" }]); // no seq: not a stream message
});

test("order: a new epoch starts counting afresh", () => {
  const order = new StreamOrder();
  order.accept(msg(10));
  order.accept(msg(12));
  assert.deepEqual(seqs(order.accept(msg(1, "e2"))), [1]);
  assert.equal(order.hasGap, false);
  assert.equal(order.epoch, "e2");
});

test("order: skipping to the server's position hands on what is held up to it, in order", () => {
  const order = new StreamOrder();
  order.accept(msg(1));
  order.accept(msg(9));
  order.accept(msg(7));
  order.accept(msg(12));
  // resume answered {recovered: false, seq: 10}: 2..6 are gone; the snapshot had come as seq 10
  order.accept({ ...msg(10), messageId: "snapshot" });
  assert.deepEqual(seqs(order.skipTo(10, "e1")), [7, 9, 10]);
  assert.equal(order.lastSeq, 10);
  assert.equal(order.hasGap, true); // 12 still waits for 11
  assert.deepEqual(seqs(order.accept(msg(11))), [11, 12]);
});
