/**
 * Where the consumer keeps the RSVP table and its cursor. The one rule every store keeps: an
 * event's change and its sequence are committed together, or neither is. Then a crash at any
 * point loses nothing (the event is read again) and applies nothing twice (its sequence is
 * already stored, so it is skipped).
 *
 * In Moim this is Postgres, one transaction per event (docs/moim-integration.md has the SQL):
 *   BEGIN; SELECT last_sequence FROM ticketing_feed_cursor WHERE consumer = 'rsvps' FOR UPDATE;
 *   -- sequence ≤ last_sequence: ROLLBACK, already applied
 *   upsert ticket_reservations, rsvps, rsvp_answers;
 *   UPDATE ticketing_feed_cursor SET last_sequence = $sequence; COMMIT;
 * The example keeps it in a JSON file, replaced atomically, which keeps the same rule.
 */
import { open, readFile, rename } from "node:fs/promises";
import type { Reservation } from "../../src/index.js";
import {
  applyReservation,
  emptyTable,
  type ReservationRow,
  type RsvpRow,
  type RsvpTable,
} from "./rsvp-table.js";

export interface RsvpStore {
  /** The last sequence applied; 0 before the first. */
  lastSequence(): Promise<bigint>;
  /**
   * Applies one feed event (the reservation as the event left it; none: only the cursor moves)
   * and stores its sequence, atomically. False when the sequence was applied before.
   */
  applyEvent(sequence: bigint, reservation: Reservation | undefined): Promise<boolean>;
  /** The reservations the table knows, to read again on a resync. */
  knownReservationIds(): Promise<string[]>;
  /** Applies each reservation as it is now and moves the cursor to `resumeAfter`, atomically. */
  resync(reservations: Reservation[], resumeAfter: bigint): Promise<void>;
}

/**
 * The table in one JSON file. Each commit writes a new file, flushes it to disk and renames it
 * over the old one, so the file on disk is always one whole committed state. One process only.
 */
export class FileRsvpStore implements RsvpStore {
  private constructor(
    private readonly path: string,
    private table: RsvpTable,
  ) {}

  /** Opens the file, or starts an empty table when it does not exist yet. */
  static async open(path: string): Promise<FileRsvpStore> {
    return new FileRsvpStore(path, await readTable(path));
  }

  async lastSequence(): Promise<bigint> {
    return this.table.lastSequence;
  }

  async applyEvent(sequence: bigint, reservation: Reservation | undefined): Promise<boolean> {
    if (sequence <= this.table.lastSequence) {
      return false;
    }
    await this.commit((table) => {
      if (reservation) applyReservation(table, reservation);
      table.lastSequence = sequence;
      table.appliedLog.push(sequence);
    });
    return true;
  }

  async knownReservationIds(): Promise<string[]> {
    return [...this.table.reservations.keys()];
  }

  async resync(reservations: Reservation[], resumeAfter: bigint): Promise<void> {
    await this.commit((table) => {
      reservations.forEach((reservation) => applyReservation(table, reservation));
      table.lastSequence = resumeAfter;
    });
  }

  /** Changes a copy, makes it durable, and only then lets readers see it. */
  private async commit(change: (table: RsvpTable) => void): Promise<void> {
    const next = decode(encode(this.table));
    change(next);
    const staged = `${this.path}.staged`;
    const file = await open(staged, "w");
    try {
      await file.writeFile(encode(next));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(staged, this.path);
    this.table = next;
  }
}

/** Reads a table the store wrote; for the store itself and for whoever inspects the file. */
export async function readTable(path: string): Promise<RsvpTable> {
  try {
    return decode(await readFile(path, "utf8"));
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") {
      return emptyTable();
    }
    throw error;
  }
}

function encode(table: RsvpTable): string {
  return JSON.stringify({
    lastSequence: table.lastSequence.toString(),
    rsvps: Object.fromEntries(table.rsvps),
    reservations: Object.fromEntries(table.reservations),
    appliedLog: table.appliedLog.map(String),
  });
}

function decode(text: string): RsvpTable {
  const raw = JSON.parse(text) as {
    lastSequence: string;
    rsvps: Record<string, RsvpRow>;
    reservations: Record<string, ReservationRow>;
    appliedLog: string[];
  };
  return {
    lastSequence: BigInt(raw.lastSequence),
    rsvps: new Map(Object.entries(raw.rsvps)),
    reservations: new Map(Object.entries(raw.reservations)),
    appliedLog: raw.appliedLog.map(BigInt),
  };
}
