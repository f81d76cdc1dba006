#!/usr/bin/env node
// rsmld exec handler in Node.js (item framing): appends each item's payload, decoded, as one
// line to the file argv[2], then answers for it. process.stdout.write needs no flush: on a
// pipe it is asynchronous, but Node hands each write to the pipe at once (queueing it only
// while the pipe is full) and finishes queued writes before it exits, so every answer
// reaches rsmld without waiting for more output.
//
//   rsmld --handler exec -- /opt/app/handler.js /var/lib/out/payloads.txt
"use strict";
const fs = require("fs");
const readline = require("readline");

const out = fs.openSync(process.argv[2], "a");
let n = 0; // the unit number of the line being handled

function handle(item) {
  fs.writeSync(out, Buffer.concat([Buffer.from(item.data, "base64"), Buffer.from("\n")]));
}

readline.createInterface({ input: process.stdin, crlfDelay: Infinity }).on("line", (line) => {
  n += 1;
  try {
    handle(JSON.parse(line));
    process.stdout.write(`ok ${n}\n`);
  } catch (e) {
    // One line: no newline may end up in the message.
    process.stdout.write(`err ${n} ${String(e && e.message).replace(/\s+/g, " ")}\n`);
  }
});
