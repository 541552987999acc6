// A second vaultd client, written from protocol/SPEC.md alone: fetch one token over the socket.
//
// It shares no code with the Python client: Node's standard library only, and its own minimal
// MessagePack encoder and decoder (nil, bool, int, float, str, bin, array, map: what the protocol
// uses; no ext). The tests run it to prove that SPEC.md is enough to write a client.
//
//   node fetch_token.mjs NAME [--min-ttl SECONDS] [--socket PATH]
//       hello, then token.get NAME: prints the result map as one line of JSON.
//   node fetch_token.mjs --selftest VECTORS.json
//       decodes (and, for requests, encodes) every conformance vector and compares.
//
// Exit status: 0 success; 1 the daemon answered an error (stderr: "error CODE NAME: message");
// 2 bad usage; 3 no daemon, an untrusted socket, a timeout or a broken conversation.

import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import process from "node:process";

const PROTOCOL = 1;
const MAX_MESSAGE = 64 * 1024 * 1024; // answers come from our own daemon: generous, but finite
const MAX_DEPTH = 32;
const TIMEOUT_MS = 10000;

// -- MessagePack --------------------------------------------------------------------------------

class Incomplete extends Error {}

function encode(value) {
  const parts = [];
  const push = (...bytes) => parts.push(Buffer.from(bytes));
  // The shortest header for a length: a fix form below `fixLimit` (0 for none), else 8, 16, 32 bits.
  const header = (len, fix, fixLimit, b8, b16, b32) => {
    if (len < fixLimit) push(fix | len);
    else if (b8 !== null && len < 0x100) push(b8, len);
    else if (len < 0x10000) push(b16, len >> 8, len & 0xff);
    else push(b32, len >>> 24, (len >> 16) & 0xff, (len >> 8) & 0xff, len & 0xff);
  };
  const walk = (v) => {
    if (v === null || v === undefined) push(0xc0);
    else if (v === false) push(0xc2);
    else if (v === true) push(0xc3);
    else if (typeof v === "number" && Number.isSafeInteger(v)) encodeInt(BigInt(v), parts);
    else if (typeof v === "bigint") encodeInt(v, parts);
    else if (typeof v === "number") {
      const b = Buffer.alloc(9);
      b[0] = 0xcb; // every float as float 64, as the daemon does
      b.writeDoubleBE(v, 1);
      parts.push(b);
    } else if (typeof v === "string") {
      const raw = Buffer.from(v, "utf8");
      header(raw.length, 0xa0, 32, 0xd9, 0xda, 0xdb);
      parts.push(raw);
    } else if (v instanceof Uint8Array) {
      header(v.length, 0, 0, 0xc4, 0xc5, 0xc6);
      parts.push(Buffer.from(v));
    } else if (Array.isArray(v)) {
      header(v.length, 0x90, 16, null, 0xdc, 0xdd);
      v.forEach(walk);
    } else if (typeof v === "object") {
      const keys = Object.keys(v);
      header(keys.length, 0x80, 16, null, 0xde, 0xdf);
      for (const k of keys) {
        walk(k);
        walk(v[k]);
      }
    } else throw new TypeError(`cannot encode ${typeof v}`);
  };
  walk(value);
  return Buffer.concat(parts);
}

function encodeInt(n, parts) {
  const b = Buffer.alloc(9);
  if (n >= 0n && n < 0x80n) return parts.push(Buffer.from([Number(n)]));
  if (n < 0n && n >= -32n) return parts.push(Buffer.from([0x100 + Number(n)]));
  if (n >= 0n) {
    if (n < 0x100n) return parts.push(Buffer.from([0xcc, Number(n)]));
    if (n < 0x10000n) (b[0] = 0xcd), b.writeUInt16BE(Number(n), 1), parts.push(b.subarray(0, 3));
    else if (n < 0x100000000n) (b[0] = 0xce), b.writeUInt32BE(Number(n), 1), parts.push(b.subarray(0, 5));
    else (b[0] = 0xcf), b.writeBigUInt64BE(n, 1), parts.push(b);
    return;
  }
  if (n >= -0x80n) (b[0] = 0xd0), b.writeInt8(Number(n), 1), parts.push(b.subarray(0, 2));
  else if (n >= -0x8000n) (b[0] = 0xd1), b.writeInt16BE(Number(n), 1), parts.push(b.subarray(0, 3));
  else if (n >= -0x80000000n) (b[0] = 0xd2), b.writeInt32BE(Number(n), 1), parts.push(b.subarray(0, 5));
  else (b[0] = 0xd3), b.writeBigInt64BE(n, 1), parts.push(b);
}

// Decode one object at buf[start:]: [value, end]. Throws Incomplete if more bytes are needed.
function decode(buf, start = 0) {
  let pos = start;
  const need = (n) => {
    if (n > MAX_MESSAGE) throw new Error(`an announced length of ${n} bytes is over the limit`);
    if (pos + n > buf.length) throw new Incomplete();
  };
  const take = (n) => {
    need(n);
    const out = buf.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  const u = (n) => {
    const b = take(n);
    return n === 1 ? b[0] : n === 2 ? b.readUInt16BE(0) : b.readUInt32BE(0);
  };
  const big = (v) => (v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
  const str = (n) => {
    const raw = take(n);
    const text = new TextDecoder("utf-8", { fatal: true }).decode(raw); // invalid UTF-8 throws
    return text;
  };
  const array = (n, depth) => {
    const out = [];
    for (let i = 0; i < n; i++) out.push(item(depth));
    return out;
  };
  const map = (n, depth) => {
    const out = Object.create(null);
    for (let i = 0; i < n; i++) {
      const key = item(depth);
      if (typeof key !== "string") throw new Error("a map key that is not a str");
      out[key] = item(depth);
    }
    return out;
  };
  const item = (depth) => {
    if (depth > MAX_DEPTH) throw new Error("nested too deeply");
    const t = u(1);
    if (t <= 0x7f) return t;
    if (t >= 0xe0) return t - 0x100;
    if (t >= 0xa0 && t <= 0xbf) return str(t & 0x1f);
    if (t >= 0x90 && t <= 0x9f) return array(t & 0x0f, depth + 1);
    if (t >= 0x80 && t <= 0x8f) return map(t & 0x0f, depth + 1);
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return Buffer.from(take(u(1)));
      case 0xc5: return Buffer.from(take(u(2)));
      case 0xc6: return Buffer.from(take(u(4)));
      case 0xca: return take(4).readFloatBE(0);
      case 0xcb: return take(8).readDoubleBE(0);
      case 0xcc: return u(1);
      case 0xcd: return u(2);
      case 0xce: return u(4);
      case 0xcf: return big(take(8).readBigUInt64BE(0));
      case 0xd0: return take(1).readInt8(0);
      case 0xd1: return take(2).readInt16BE(0);
      case 0xd2: return take(4).readInt32BE(0);
      case 0xd3: return big(take(8).readBigInt64BE(0));
      case 0xd9: return str(u(1));
      case 0xda: return str(u(2));
      case 0xdb: return str(u(4));
      case 0xdc: return array(u(2), depth + 1);
      case 0xdd: return array(u(4), depth + 1);
      case 0xde: return map(u(2), depth + 1);
      case 0xdf: return map(u(4), depth + 1);
      default: throw new Error(`MessagePack type 0x${t.toString(16)} is not used by the protocol`);
    }
  };
  const value = item(0);
  return [value, pos];
}

// -- the connection -----------------------------------------------------------------------------

class Failure extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function socketPath(env, uid) {
  if (env.VAULTD_SOCKET) return env.VAULTD_SOCKET;
  if (env.XDG_RUNTIME_DIR) return `${env.XDG_RUNTIME_DIR.replace(/\/+$/, "")}/vaultd/vaultd.sock`;
  return `/tmp/vaultd-${uid}/vaultd.sock`;
}

// Node cannot read SO_PEERCRED, so this client checks the path instead (SPEC.md section 1): the
// socket and every folder above it are owned by us or root, its own folder is writable by no one
// else, and no folder above is writable by others unless sticky. No other user can then have put
// a listener there, or swap one in before we connect. It returns the path to connect to, with
// every symbolic link resolved, so that what was checked is what is used.
function trustedPath(given, uid) {
  const mine = (st) => st.uid === uid || st.uid === 0;
  let folder;
  try {
    folder = fs.realpathSync(path.dirname(path.resolve(given)));
  } catch (err) {
    throw new Failure(3, `vaultd is not reachable at ${given}: ${err.code}`);
  }
  const target = path.join(folder, path.basename(given));
  let st;
  try {
    st = fs.lstatSync(target);
  } catch (err) {
    throw new Failure(3, `vaultd is not reachable at ${given}: ${err.code}`);
  }
  if (!st.isSocket() || st.uid !== uid) {
    throw new Failure(3, `refusing to talk to ${given}: it is not a socket of uid ${uid} (owner ${st.uid})`);
  }
  for (let dir = folder, last = true; ; last = false) {
    const d = fs.lstatSync(dir);
    const others = d.mode & 0o022;
    if (!d.isDirectory() || !mine(d) || (others && (last || !(d.mode & 0o1000)))) {
      throw new Failure(3, `refusing to talk to ${given}: ${dir} could be changed by another user`);
    }
    if (dir === "/") break;
    dir = path.dirname(dir);
  }
  return target;
}

function connect(target) {
  return new Promise((resolve, reject) => {
    const sock = net.createConnection({ path: target });
    sock.once("connect", () => resolve(sock));
    sock.once("error", (err) => reject(new Failure(3, `vaultd is not reachable at ${target}: ${err.code}`)));
  });
}

class Conversation {
  constructor(sock) {
    this.sock = sock;
    this.buf = Buffer.alloc(0);
    this.waiting = new Map(); // msgid -> {resolve, reject}
    this.nextId = 1;
    this.closed = null;
    sock.on("data", (chunk) => this.receive(chunk));
    sock.on("error", (err) => this.fail(new Failure(3, `connection to vaultd lost: ${err.code}`)));
    sock.on("close", () => this.fail(new Failure(3, "the daemon closed the connection")));
  }

  call(method, params) {
    if (this.closed) return Promise.reject(this.closed);
    const msgid = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(msgid, { resolve, reject });
      this.sock.write(encode([0, msgid, method, [params]]));
    });
  }

  receive(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    try {
      for (;;) {
        let message, end;
        try {
          [message, end] = decode(this.buf);
        } catch (err) {
          if (!(err instanceof Incomplete)) throw err;
          if (this.buf.length > MAX_MESSAGE) throw new Error("an answer over the size limit");
          return;
        }
        this.buf = this.buf.subarray(end);
        this.dispatch(message);
      }
    } catch (err) {
      this.fail(new Failure(3, `the daemon sent an invalid message: ${err.message}`));
      this.sock.destroy();
    }
  }

  dispatch(message) {
    if (!Array.isArray(message)) throw new Error("a message that is not an array");
    if (message[0] === 2 && message.length === 3) return; // a notification: none expected, ignored
    if (message[0] !== 1 || message.length !== 4) throw new Error("a message that is not a response");
    const [, msgid, error, result] = message;
    const call = this.waiting.get(msgid);
    if (!call) throw new Error(`an answer to msgid ${msgid}, which was never asked`);
    this.waiting.delete(msgid);
    if (error === null) return call.resolve(result);
    if (typeof error !== "object" || !Number.isInteger(error.code)) throw new Error("an error without a code");
    call.reject(remoteError(error));
  }

  fail(failure) {
    this.closed ??= failure;
    for (const call of this.waiting.values()) call.reject(failure);
    this.waiting.clear();
  }
}

// The daemon's error map; name and message are optional, and a code may be one we do not know.
function remoteError(error) {
  const name = typeof error.name === "string" ? error.name : `ERROR_${error.code}`;
  const message = typeof error.message === "string" ? error.message : "";
  const failure = new Failure(1, `error ${error.code} ${name}: ${message}`);
  failure.code = error.code;
  return failure;
}

async function fetchToken(name, minTtl, given) {
  const uid = process.getuid();
  const target = trustedPath(given ?? socketPath(process.env, uid), uid);
  const sock = await connect(target);
  const timer = setTimeout(() => {
    process.stderr.write("no answer from vaultd within 10 s\n");
    process.exit(3);
  }, TIMEOUT_MS);
  try {
    const conv = new Conversation(sock);
    const hello = await conv.call("hello", { protocol: PROTOCOL, client: "fetch_token.mjs" });
    if (hello.protocol !== PROTOCOL) throw new Failure(3, `the daemon speaks protocol ${hello.protocol}`);
    const params = { name };
    if (minTtl !== undefined) params.min_ttl = minTtl;
    return await conv.call("token.get", params);
  } finally {
    clearTimeout(timer);
    sock.end();
  }
}

// -- self-test against the conformance vectors ----------------------------------------------------

function same(actual, expected) {
  if (expected !== null && typeof expected === "object" && !Array.isArray(expected)) {
    const keys = Object.keys(expected);
    if (keys.length === 1 && keys[0] === "$bin") {
      return actual instanceof Uint8Array && Buffer.from(actual).toString("hex") === expected.$bin;
    }
    if (actual === null || typeof actual !== "object" || Array.isArray(actual) || actual instanceof Uint8Array) {
      return false;
    }
    const have = Object.keys(actual);
    return have.length === keys.length && keys.every((k) => Object.hasOwn(actual, k) && same(actual[k], expected[k]));
  }
  if (Array.isArray(expected)) {
    return Array.isArray(actual) && actual.length === expected.length && expected.every((e, i) => same(actual[i], e));
  }
  return actual === expected;
}

function fromNotation(v) {
  if (Array.isArray(v)) return v.map(fromNotation);
  if (v !== null && typeof v === "object") {
    if (Object.keys(v).length === 1 && "$bin" in v) return Buffer.from(v.$bin, "hex");
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fromNotation(x)]));
  }
  return v;
}

function selftest(file) {
  const vectors = JSON.parse(fs.readFileSync(file, "utf8"));
  const problems = [];
  let decoded = 0;
  let encoded = 0;
  const stream = [];
  const checkDecode = (what, hex, expected) => {
    const bytes = Buffer.from(hex, "hex");
    stream.push([bytes, expected]);
    for (let cut = 0; cut < bytes.length; cut++) {
      try {
        decode(bytes.subarray(0, cut));
        return problems.push(`${what}: decoded from only ${cut} of ${bytes.length} bytes`);
      } catch (err) {
        if (!(err instanceof Incomplete)) return problems.push(`${what}: ${err.message} at ${cut} bytes`);
      }
    }
    let value, end;
    try {
      [value, end] = decode(bytes);
    } catch (err) {
      return problems.push(`${what}: ${err instanceof Incomplete ? "incomplete" : err.message}`);
    }
    if (end !== bytes.length) problems.push(`${what}: ${bytes.length - end} bytes left over`);
    if (!same(value, expected)) problems.push(`${what}: decoded ${JSON.stringify(value)}`);
    decoded++;
  };
  const checkEncode = (what, hex, message) => {
    const got = encode(fromNotation(message)).toString("hex");
    if (got !== hex) problems.push(`${what}: encoded ${got}, expected ${hex}`);
    encoded++;
  };
  for (const c of vectors.calls) {
    const request = [0, c.msgid, c.method, c.params];
    checkDecode(`request ${c.label}`, c.request, request);
    checkEncode(`request ${c.label}`, c.request, request);
    checkDecode(`response ${c.label}`, c.response, [1, c.msgid, null, c.result]);
  }
  for (const e of vectors.errors) {
    if (e.params !== null) {
      const request = [0, e.msgid, e.method, e.params];
      checkDecode(`request ${e.name}`, e.request, request);
      checkEncode(`request ${e.name}`, e.request, request);
    }
    const error = { code: e.code, name: e.name, message: e.message };
    checkDecode(`error ${e.name}`, e.response, [1, e.msgid, error, null]);
    if (remoteError(error).message !== `error ${e.code} ${e.name}: ${e.message}`) problems.push(`error ${e.name}`);
  }
  for (const v of vectors.error_variants) {
    checkDecode(`error variant ${v.label}`, v.response, [1, v.msgid, v.error, null]);
    if (remoteError(v.error).code !== v.error.code) problems.push(`error variant ${v.label}: code`);
  }
  for (const n of vectors.notifications) {
    checkDecode(`notification ${n.method}`, n.message, [2, n.method, n.params]);
  }
  // Back to back in one buffer, as they arrive on a stream.
  const all = Buffer.concat(stream.map(([bytes]) => bytes));
  try {
    for (let pos = 0, i = 0; pos < all.length; i++) {
      const [value, end] = decode(all, pos);
      if (!same(value, stream[i][1])) problems.push(`stream: message ${i} decoded differently`);
      pos = end;
    }
  } catch (err) {
    problems.push(`stream: ${err instanceof Incomplete ? "incomplete" : err.message}`);
  }
  for (const p of problems) process.stderr.write(`${p}\n`);
  process.stdout.write(`selftest: ${decoded} messages decoded, ${encoded} requests encoded, ${problems.length} problems\n`);
  return problems.length ? 1 : 0;
}

// -- command line ---------------------------------------------------------------------------------

function usage(message) {
  process.stderr.write(`${message}\nusage: node fetch_token.mjs NAME [--min-ttl SECONDS] [--socket PATH]\n`);
  process.stderr.write("       node fetch_token.mjs --selftest VECTORS.json\n");
  process.exit(2);
}

async function main(argv) {
  if (argv[0] === "--selftest") {
    if (argv.length !== 2) usage("--selftest takes one file");
    return selftest(argv[1]);
  }
  let name, minTtl, socket;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--min-ttl") {
      minTtl = Number(argv[++i]);
      if (!Number.isFinite(minTtl) || minTtl < 0) usage("--min-ttl needs a number of seconds");
    } else if (argv[i] === "--socket") {
      socket = argv[++i];
      if (!socket) usage("--socket needs a path");
    } else if (name === undefined && !argv[i].startsWith("--")) {
      name = argv[i];
    } else usage(`unexpected argument ${argv[i]}`);
  }
  if (!name) usage("which credential?");
  try {
    const result = await fetchToken(name, minTtl, socket);
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  } catch (err) {
    if (!(err instanceof Failure)) throw err;
    process.stderr.write(`${err.message}\n`);
    return err.status;
  }
}

process.exitCode = await main(process.argv.slice(2));
