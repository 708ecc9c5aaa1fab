// Installed in every workflow isolate before the script. Returns the host object Python drives;
// nothing here is reachable from the script except the frozen globals it defines.
//
// Keys. Every agent() call gets a key from the chain it runs in and its identity. A chain is the
// key of the last agent() call whose result the code is continuing from: Python resolves one call
// at a time and lets the isolate drain before the next, so whatever runs in that drain continues
// that call. parallel() slots and pipeline() items start chains of their own; what follows them
// continues from all of their chains. So keys depend on structure, never on completion timing.
(function () {
  'use strict';
  const RealDate = Date;
  const realFreeze = Object.freeze;
  const stringify = JSON.stringify;

  class DeterminismError extends Error {}
  Object.defineProperty(DeterminismError.prototype, 'name', { value: 'DeterminismError' });
  class WorkflowBudgetExceededError extends Error {}
  Object.defineProperty(WorkflowBudgetExceededError.prototype, 'name', { value: 'WorkflowBudgetExceededError' });
  const advice = ' reads the clock or randomness, so a resumed workflow could take another path; pass values in through args';

  // ---- determinism guards
  function GuardedDate(...values) {
    if (!new.target) throw new DeterminismError('Date()' + advice);
    if (values.length === 0) throw new DeterminismError('new Date() without arguments' + advice);
    return Reflect.construct(RealDate, values, new.target);
  }
  GuardedDate.prototype = RealDate.prototype;
  GuardedDate.UTC = RealDate.UTC;
  GuardedDate.parse = RealDate.parse;
  GuardedDate.now = function now() { throw new DeterminismError('Date.now()' + advice); };
  Object.defineProperty(RealDate.prototype, 'constructor', { value: GuardedDate, writable: false, configurable: false });
  Object.defineProperty(globalThis, 'Date', { value: GuardedDate, writable: false, configurable: false });
  Math.random = function random() { throw new DeterminismError('Math.random()' + advice); };
  const formatGetter = Object.getOwnPropertyDescriptor(Intl.DateTimeFormat.prototype, 'format').get;
  Object.defineProperty(Intl.DateTimeFormat.prototype, 'format', {
    configurable: false,
    get() {
      const format = formatGetter.call(this);
      return function (date) {
        if (date === undefined) throw new DeterminismError('Intl.DateTimeFormat#format() without a date' + advice);
        return format(date);
      };
    },
  });
  const realFormatToParts = Intl.DateTimeFormat.prototype.formatToParts;
  Intl.DateTimeFormat.prototype.formatToParts = function (date) {
    if (date === undefined) throw new DeterminismError('formatToParts() without a date' + advice);
    return realFormatToParts.call(this, date);
  };
  for (const name of ['WebAssembly', 'SharedArrayBuffer', 'Atomics', 'Temporal', 'setInterval', 'clearInterval']) {
    delete globalThis[name];
  }

  // ---- host state (closure only)
  const calls = [];            // agent() calls not yet taken by Python
  const pending = new Map();   // key -> {resolve, reject}
  const occurrences = new Map();
  const logOccurrences = new Map();
  const logs = [];
  const failures = [];
  let chain = 'root';
  let currentPhase = null;
  let spent = 0;
  let total = null;
  let outcome = { done: false, result: null, error: null };

  function fnv(text, seed) {
    let hash = seed;
    for (let index = 0; index < text.length; index++) {
      hash ^= BigInt(text.charCodeAt(index));
      hash = (hash * 0x100000001b3n) & 0xffffffffffffffffn;
    }
    return hash.toString(16).padStart(16, '0');
  }
  function digest(text) { return fnv(text, 0xcbf29ce484222325n) + fnv(text, 0x84222325cbf29ce4n); }
  function stable(value) {
    if (Array.isArray(value)) return '[' + value.map(stable).join(',') + ']';
    if (value && typeof value === 'object') {
      return '{' + Object.keys(value).sort().map((key) => stringify(key) + ':' + stable(value[key])).join(',') + '}';
    }
    return stringify(value === undefined ? null : value);
  }
  function nextKey(parent, what) {
    const base = digest(parent + '|' + what);
    const seen = occurrences.get(base) || 0;
    occurrences.set(base, seen + 1);
    return seen === 0 ? base : digest(base + '#' + seen);
  }
  function logKey(what) {
    const base = digest(chain + '|log|' + what);
    const seen = logOccurrences.get(base) || 0;
    logOccurrences.set(base, seen + 1);
    return seen === 0 ? base : digest(base + '#' + seen);
  }
  function pushLog(level, line) {
    logs.push({ key: logKey(level + ':' + line), level, text: line, phase: currentPhase });
  }
  function describe(error) {
    if (error && typeof error === 'object') {
      const line = /workflow\.js:(\d+)/.exec(String(error.stack || ''));
      return { name: String(error.name || 'Error'), message: String(error.message), line: line ? Number(line[1]) : null };
    }
    return { name: 'Error', message: String(error), line: null };
  }
  function text(values) {
    return values.map((value) => (typeof value === 'string' ? value : stringify(value))).join(' ');
  }

  // ---- primitives
  const AGENT_OPTIONS = ['label', 'phase', 'schema', 'model', 'effort', 'isolation', 'agentType', 'timeoutSeconds'];
  function agent(prompt, options) {
    if (typeof prompt !== 'string' || !prompt) throw new TypeError('agent(prompt, options): prompt must be a non-empty string');
    options = options === undefined ? {} : options;
    if (!options || typeof options !== 'object' || Array.isArray(options)) throw new TypeError('agent(): options must be an object');
    for (const name of Object.keys(options)) {
      if (!AGENT_OPTIONS.includes(name)) throw new TypeError('agent(): unknown option ' + stringify(name) + '; known: ' + AGENT_OPTIONS.join(', '));
    }
    if (options.isolation !== undefined && options.isolation !== 'worktree') throw new TypeError("agent(): isolation must be 'worktree'");
    if (total !== null && spent >= total) {
      throw new WorkflowBudgetExceededError('the budget of ' + total + ' is spent (' + spent + '); no more agents start');
    }
    const identity = { prompt, schema: options.schema ?? null, model: options.model ?? null, effort: options.effort ?? null,
                       agentType: options.agentType ?? null, isolation: options.isolation ?? null };
    const key = nextKey(chain, 'agent:' + stable(identity));
    const call = JSON.parse(stringify({ key, kind: 'agent', prompt, options: { ...options, phase: options.phase ?? currentPhase } }));
    calls.push(call);
    return new Promise((resolve, reject) => { pending.set(key, { resolve, reject }); });
  }

  // workflow(name | {scriptPath}, args): the host loads the script and starts it inside this isolate
  // (startNested), with its own `args` and no further nesting; its agents share caps and budget.
  let nestedDepth = 0;
  function workflow(target, nestedArgs) {
    if (nestedDepth > 0) throw new Error('workflow(): workflows nest one level only');
    let spec;
    if (typeof target === 'string' && target) spec = { name: target };
    else if (target && typeof target === 'object' && typeof target.scriptPath === 'string') spec = { scriptPath: target.scriptPath };
    else throw new TypeError("workflow(name | {scriptPath}, args): pass a workflow name or {scriptPath: '...'}");
    const argsText = stringify(nestedArgs === undefined ? null : nestedArgs);
    const key = nextKey(chain, 'workflow:' + stable(spec) + '|' + argsText);
    calls.push({ key, kind: 'workflow', spec, args: JSON.parse(argsText) });
    return new Promise((resolve, reject) => { pending.set(key, { resolve, reject }); });
  }
  function noNesting() { throw new Error('workflow(): workflows nest one level only'); }

  function settleAll(parent, kind, starters) {
    const label = nextKey(parent, kind);
    const ends = new Array(starters.length);
    const promises = starters.map((start, index) => {
      chain = digest(label + '/' + index);
      try {
        return Promise.resolve(start(index)).then(
          (value) => { ends[index] = chain; return value; },
          (error) => { ends[index] = chain; failures.push({ kind, index, error: describe(error) }); return null; });
      } catch (error) {
        ends[index] = chain;
        failures.push({ kind, index, error: describe(error) });
        return Promise.resolve(null);
      } finally {
        chain = parent;
      }
    });
    return Promise.all(promises).then((values) => { chain = digest(label + '>' + ends.join(',')); return values; });
  }

  function parallel(thunks) {
    if (!Array.isArray(thunks) || thunks.some((thunk) => typeof thunk !== 'function')) {
      throw new TypeError('parallel(thunks): pass an array of functions, e.g. parallel(files.map(f => () => agent(...)))');
    }
    if (thunks.length > 4096) throw new RangeError('parallel(): at most 4096 thunks');
    return settleAll(chain, 'parallel', thunks.map((thunk) => () => thunk()));
  }

  function pipeline(items, ...stages) {
    if (!Array.isArray(items)) throw new TypeError('pipeline(items, ...stages): items must be an array');
    if (items.length > 4096) throw new RangeError('pipeline(): at most 4096 items');
    if (!stages.length || stages.some((stage) => typeof stage !== 'function')) throw new TypeError('pipeline(): stages must be functions');
    return settleAll(chain, 'pipeline', items.map((item) => (index) => {
      let step = Promise.resolve(item);
      stages.forEach((stage) => {
        step = step.then((previous) => (previous === null ? null : stage(previous, item, index)));
      });
      return step;
    }));
  }

  function phase(title) { currentPhase = String(title); pushLog('phase', currentPhase); }
  function log(...values) { pushLog('info', text(values)); }
  const consoleObject = {};
  for (const level of ['log', 'info', 'warn', 'error', 'debug']) {
    consoleObject[level] = (...values) => { pushLog(level, text(values)); };
  }
  // Deterministic timers: callbacks run in delay order once the current work has drained.
  let timerId = 0;
  const cancelled = new Set();
  function setTimeoutShim(callback, delay, ...rest) {
    const id = ++timerId;
    Promise.resolve().then(() => { if (!cancelled.has(id)) callback(...rest); });
    return id;
  }
  function clearTimeoutShim(id) { cancelled.add(id); }
  const budget = realFreeze({
    get total() { return total; },
    spent() { return spent; },
    remaining() { return total === null ? Infinity : Math.max(total - spent, 0); },
  });

  const globals = { agent, parallel, pipeline, phase, log, workflow, console: realFreeze(consoleObject), budget,
                    setTimeout: setTimeoutShim, clearTimeout: clearTimeoutShim, DeterminismError,
                    WorkflowBudgetExceededError };
  for (const [name, value] of Object.entries(globals)) {
    if (typeof value === 'function') realFreeze(value);
    const existing = Object.getOwnPropertyDescriptor(globalThis, name);
    if (existing && !existing.configurable) {
      globalThis[name] = value;  // mini-racer's own timers: replaced by the deterministic ones
      if (globalThis[name] !== value) throw new Error('cannot install ' + name);
    } else {
      Object.defineProperty(globalThis, name, { value, writable: false, configurable: false, enumerable: false });
    }
  }

  // ---- frozen intrinsics: the script cannot change what the host's own code relies on.
  // Error types stay open: freezing Error.prototype would make `this.name = ...` in any Error
  // subclass throw (the "override mistake"), and the host reads errors defensively anyway.
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    const value = globalThis[name];
    if (name.endsWith('Error')) continue;
    if ((typeof value === 'function' || (value && typeof value === 'object')) && name !== 'globalThis') {
      realFreeze(value);
      if (value.prototype) realFreeze(value.prototype);
    }
  }
  for (const prototype of [Object.getPrototypeOf(function () {}), Object.getPrototypeOf(async function () {}),
                           Object.getPrototypeOf(function* () {}), Object.getPrototypeOf([][Symbol.iterator]())]) {
    realFreeze(prototype);
  }

  return realFreeze({
    start(run, args) {
      Object.defineProperty(globalThis, 'args', { value: realFreeze(JSON.parse(args)), writable: false,
                                                  configurable: false, enumerable: false });
      let started;
      try {
        started = run();
      } catch (error) {
        outcome = { done: true, result: null, error: describe(error) };
        return;
      }
      Promise.resolve(started).then(
        (value) => { outcome = { done: true, result: value === undefined ? null : value, error: null }; },
        (error) => { outcome = { done: true, result: null, error: describe(error) }; });
    },
    takeCalls() { return stringify(calls.splice(0, calls.length)); },
    // One eval per journaled result: hand over the calls made while the isolate drained after the
    // previous step, then settle `key` (ok: resolve with the JSON value; else reject with the message).
    step(newSpent, key, ok, payload) {
      const taken = calls.splice(0, calls.length);
      spent = newSpent;
      const waiting = pending.get(key);
      if (waiting) {
        pending.delete(key);
        chain = key;
        if (ok) waiting.resolve(JSON.parse(payload)); else waiting.reject(new Error(payload));
      }
      return stringify(taken);
    },
    startNested(key, run, nestedArgs) {
      const waiting = pending.get(key);
      if (!waiting) return false;
      pending.delete(key);
      chain = key;
      const frozenArgs = realFreeze(JSON.parse(nestedArgs));
      nestedDepth += 1;
      let started;
      try {
        started = Promise.resolve(run(frozenArgs, noNesting));
      } catch (error) {
        started = Promise.reject(error);
      } finally {
        nestedDepth -= 1;
      }
      started.then((value) => waiting.resolve(value === undefined ? null : value), (error) => waiting.reject(error));
      return true;
    },
    setBudget(newTotal, newSpent) { total = newTotal; spent = newSpent; },
    state() {
      let result = null;
      try { result = stringify(outcome.result) ?? 'null'; } catch (error) { result = stringify({ unserializable: String(error) }); }
      return stringify({ done: outcome.done, error: outcome.error, result: JSON.parse(result), logs: logs.splice(0, logs.length),
                         failures: failures.splice(0, failures.length), waiting: pending.size });
    },
  });
})()
