/** errorReason() on errors built in memory: what it reads and what it refuses to guess. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { BadRequestSchema, ErrorInfoSchema } from "../src/gen/google/rpc/error_details_pb.js";
import { Code, ConnectError, ERROR_DOMAIN, errorReason } from "../src/index.js";

test("reads the reason, metadata and field violations of the service's error", () => {
  const error = new ConnectError("bad tiers", Code.InvalidArgument, undefined, [
    {
      desc: ErrorInfoSchema,
      value: { reason: "INVALID_ARGUMENT", domain: ERROR_DOMAIN, metadata: { eventId: "e1" } },
    },
    {
      desc: BadRequestSchema,
      value: { fieldViolations: [{ field: "tiers[0].price_amount", description: "Negative." }] },
    },
  ]);

  assert.deepEqual(errorReason(error), {
    code: Code.InvalidArgument,
    reason: "INVALID_ARGUMENT",
    metadata: { eventId: "e1" },
    fieldViolations: [{ field: "tiers[0].price_amount", description: "Negative." }],
  });
});

test("is undefined for an ErrorInfo of another domain", () => {
  const error = new ConnectError("quota", Code.ResourceExhausted, undefined, [
    { desc: ErrorInfoSchema, value: { reason: "RATE_LIMITED", domain: "googleapis.com" } },
  ]);

  assert.equal(errorReason(error), undefined);
});

test("is undefined for a ConnectError without details and for anything else", () => {
  assert.equal(errorReason(new ConnectError("no route", Code.Unimplemented)), undefined);
  assert.equal(errorReason(new Error("boom")), undefined);
  assert.equal(errorReason(undefined), undefined);
});
