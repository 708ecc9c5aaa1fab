// Installed in every workflow isolate before the script: `(prelude)(config)` returns the host
// function Python drives. The host function and the prelude exist only as handles held by Python;
// neither is stored anywhere the script can reach (not on the global object, not on any global's
// properties or prototypes), so the script sees only the frozen globals defined here.
// config (JSON text): {nested: bool, chain: string} — a nested workflow runs in an isolate of its own whose
// `workflow()` always refuses, so the nesting depth belongs to the realm, not to timing.
//
// Keys. Every agent() call gets a key from the chain it runs in and its identity. A chain is the
// key of the last agent() call whose result the code is continuing from: Python resolves one call
// at a time and lets the isolate drain before the next, so whatever runs in that drain continues
// that call. parallel() slots and pipeline() items start chains of their own; what follows them
// continues from all of their chains. So keys depend on structure, never on completion timing.
(function (configText) {
  'use strict';
  const config = JSON.parse(configText);
  const NESTED = config.nested === true;
  const EVALUATOR = config.evaluator === true;  // many short scripts in turn (flow code steps, guards)
  const RealDate = Date;
  const realFreeze = Object.freeze;
  const stringify = JSON.stringify;
  const parse = JSON.parse;
  const isArray = Array.isArray;
  const ownKeys = Object.keys;
  const identifier = /^[A-Za-z_$][A-Za-z0-9_$]*$/;

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
  // No shared memory, no compiled code from bytes, no view of garbage collection (WeakRef and
  // FinalizationRegistry would let a replay take another path), no wall clock (Temporal).
  for (const name of ['WebAssembly', 'SharedArrayBuffer', 'Atomics', 'Temporal', 'setInterval', 'clearInterval',
                      'WeakRef', 'FinalizationRegistry']) {
    delete globalThis[name];
  }
  // V8's hooks into stack traces: a script setting Error.prepareStackTrace would run its code
  // whenever the host reads an error's stack; lock them all.
  Object.defineProperty(Error, 'prepareStackTrace', { value: undefined, writable: false, configurable: false });
  Object.defineProperty(Error, 'stackTraceLimit', { value: 10, writable: false, configurable: false });
  Object.defineProperty(Error, 'captureStackTrace', { value: realFreeze(Error.captureStackTrace), writable: false,
                                                      configurable: false });

  // ---- host state (closure only)
  const calls = [];            // agent() calls not yet taken by Python
  const pending = new Map();   // key -> {resolve, reject}
  const occurrences = new Map();
  const logOccurrences = new Map();
  const logs = [];
  const failures = [];
  let chain = typeof config.chain === 'string' ? config.chain : 'root';
  let currentPhase = null;
  let spent = 0;
  let total = null;
  let outcome = { done: false, result: null, error: null, chain: null };
  let queued = [];             // results handed over by queueSteps, settled one per nextStep
  let queuedAt = 0;

  // 64-bit FNV-1a in two 32-bit halves (the same digits as BigInt arithmetic, without allocating a
  // BigInt per character: a fan-out of 1,000 agent() calls hashes on every replay). The prime is
  // 2^40 + 0x1b3, so hash * prime = hash * 0x1b3 + (low word << 8) in the high word.
  function fnv(text, high, low) {
    for (let index = 0; index < text.length; index++) {
      low = (low ^ text.charCodeAt(index)) >>> 0;
      const product = low * 0x1b3;  // < 2^41: exact
      high = (Math.imul(high, 0x1b3) + Math.floor(product / 0x100000000) + (low << 8)) >>> 0;
      low = product >>> 0;
    }
    return high.toString(16).padStart(8, '0') + low.toString(16).padStart(8, '0');
  }
  function digest(text) { return fnv(text, 0xcbf29ce4, 0x84222325) + fnv(text, 0x84222325, 0xcbf29ce4); }
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
  // Reads a value the script made without letting its getters, proxies or toString break the host.
  function readable(read, fallback) {
    try {
      const value = read();
      if (typeof value === 'string') return value;
      return value === undefined || value === null ? fallback : String(value);
    } catch (error) {
      return fallback;
    }
  }
  function describe(error) {
    if (error !== null && (typeof error === 'object' || typeof error === 'function')) {
      const stack = readable(() => error.stack, '');
      const line = /workflow[\w.-]*\.js:(\d+)/.exec(stack);
      return { name: readable(() => error.name, 'Error') || 'Error', message: readable(() => error.message, ''),
               line: line ? Number(line[1]) : null };
    }
    return { name: 'Error', message: readable(() => error, 'a value that cannot be shown'), line: null };
  }
  class NotSerialisableError extends TypeError {}
  Object.defineProperty(NotSerialisableError.prototype, 'name', { value: 'TypeError' });
  function member(path, key) {
    return typeof key === 'number' ? path + '[' + key + ']'
      : identifier.test(key) ? path + '.' + key : path + '[' + stringify(key) + ']';
  }
  // What JSON.stringify would produce, as a fresh plain value, or a NotSerialisableError naming the
  // path of the first value JSON cannot hold (a cycle, a BigInt; a getter or toJSON that throws).
  // undefined, functions and symbols are dropped in objects and become null in arrays, as in JSON.
  function plain(value, path, ancestors) {
    try {
      if (value !== null && (typeof value === 'object' || typeof value === 'bigint') && typeof value.toJSON === 'function') {
        value = value.toJSON();
      }
    } catch (error) {
      throw new NotSerialisableError(path + ': its toJSON() threw: ' + describe(error).message);
    }
    switch (typeof value) {
      case 'string': case 'boolean': return value;
      case 'number': return Number.isFinite(value) ? value : null;
      case 'bigint': throw new NotSerialisableError(path + ': a BigInt is not JSON (convert it with String() or Number())');
      case 'undefined': case 'function': case 'symbol': return undefined;
      default: break;
    }
    if (value === null) return null;
    if (ancestors.includes(value)) throw new NotSerialisableError(path + ': a cycle (the value contains itself)');
    if (ancestors.length >= 256) throw new NotSerialisableError(path + ': nested deeper than 256 levels');
    ancestors.push(value);
    try {
      if (value instanceof Number || value instanceof String || value instanceof Boolean) return value.valueOf();
      if (isArray(value)) {
        const length = value.length;
        if (length > 1e6) throw new NotSerialisableError(path + ': an array of ' + length + ' items');
        const out = [];
        for (let index = 0; index < length; index++) {
          const item = plain(read(value, index, path), member(path, index), ancestors);
          out.push(item === undefined ? null : item);
        }
        return out;
      }
      const out = {};
      for (const key of ownKeys(value)) {
        const item = plain(read(value, key, path), member(path, key), ancestors);
        if (item !== undefined) {
          Object.defineProperty(out, key, { value: item, enumerable: true, writable: true, configurable: true });
        }
      }
      return out;
    } catch (error) {
      if (error instanceof NotSerialisableError) throw error;
      throw new NotSerialisableError(path + ': cannot be read as JSON (' + describe(error).name + ': ' + describe(error).message + ')');
    } finally {
      ancestors.pop();
    }
  }
  function read(holder, key, path) {
    try {
      return holder[key];
    } catch (error) {
      throw new NotSerialisableError(member(path, key) + ': reading it threw: ' + describe(error).message);
    }
  }
  function toPlain(value, path) { return plain(value, path, []); }
  function text(values) {
    return values.map((value) => (typeof value === 'string' ? value : stringify(value))).join(' ');
  }

  // ---- primitives
  const AGENT_OPTIONS = ['label', 'phase', 'schema', 'model', 'effort', 'isolation', 'agentType', 'timeoutSeconds'];
  function agent(prompt, options) {
    if (typeof prompt !== 'string' || !prompt) throw new TypeError('agent(prompt, options): prompt must be a non-empty string');
    if (options !== undefined && (!options || typeof options !== 'object' || isArray(options))) {
      throw new TypeError('agent(): options must be an object');
    }
    // One snapshot, read once: what is checked is what is sent (a getter cannot change it afterwards).
    options = options === undefined ? {} : toPlain(options, 'agent(): options');
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
    const call = { key, kind: 'agent', prompt, options: { ...options, phase: options.phase ?? currentPhase } };
    calls.push(call);
    return new Promise((resolve, reject) => { pending.set(key, { resolve, reject }); });
  }

  // workflow(name | {scriptPath}, args): the host loads the script and runs it in an isolate of its
  // own (config.nested), with its own `args`; its agents share the caps and the budget. In that
  // isolate this function always refuses, however many awaits in.
  function workflow(target, nestedArgs) {
    if (NESTED) throw new Error('workflow(): workflows nest one level only');
    let spec;
    if (typeof target === 'string' && target) spec = { name: target };
    else if (target && typeof target === 'object' && typeof target.scriptPath === 'string') spec = { scriptPath: target.scriptPath };
    else throw new TypeError("workflow(name | {scriptPath}, args): pass a workflow name or {scriptPath: '...'}");
    const given = nestedArgs === undefined ? undefined : toPlain(nestedArgs, 'workflow(): args');
    const key = nextKey(chain, 'workflow:' + stable(spec) + '|' + stringify(given === undefined ? null : given));
    const call = { key, kind: 'workflow', spec };
    if (given !== undefined) call.args = given;
    calls.push(call);
    return new Promise((resolve, reject) => { pending.set(key, { resolve, reject }); });
  }

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
                           Object.getPrototypeOf(function* () {}), Object.getPrototypeOf(async function* () {}),
                           Object.getPrototypeOf([][Symbol.iterator]())]) {
    realFreeze(prototype);
  }
  // ...and cannot rebind the names the host's code looks up at call time (`Promise`, `Object`,
  // `BigInt`, `Error`…): every global binding is made read-only and permanent.
  for (const name of Object.getOwnPropertyNames(globalThis)) {
    const descriptor = Object.getOwnPropertyDescriptor(globalThis, name);
    if (descriptor.configurable || descriptor.writable) {
      Object.defineProperty(globalThis, name, { value: globalThis[name], writable: false, configurable: false,
                                                enumerable: descriptor.enumerable });
    }
  }

  // ---- evaluator realms (flow code steps and guards): one script after another in this isolate,
  // and none may leave anything behind for the next. Everything reachable from the global object is
  // frozen, and the global object takes no new names. Error constructors and prototypes stay open
  // (the override mistake, above): their own properties are recorded here and put back after each
  // script; `evaluated()` says the realm is not clean when that cannot be done exactly, and Python
  // drops the isolate.
  const errorShapes = [];
  if (EVALUATOR) {
    const open = new Set();
    const isError = (key, value) => typeof key === 'string' && key.endsWith('Error') && typeof value === 'function';
    const findErrors = (holder) => {
      for (const key of Reflect.ownKeys(holder)) {
        const descriptor = Object.getOwnPropertyDescriptor(holder, key);
        if (descriptor && isError(key, descriptor.value)) {
          open.add(descriptor.value);
          if (descriptor.value.prototype) open.add(descriptor.value.prototype);
        }
      }
    };
    findErrors(globalThis);
    if (typeof WebAssembly === 'object') findErrors(WebAssembly);
    const seen = new Set();
    const visit = (value) => {
      if (value === null || (typeof value !== 'object' && typeof value !== 'function') || seen.has(value)) return;
      seen.add(value);
      if (!open.has(value)) realFreeze(value);
      visit(Object.getPrototypeOf(value));
      for (const key of Reflect.ownKeys(value)) {
        const descriptor = Object.getOwnPropertyDescriptor(value, key);
        if (!descriptor) continue;
        if ('value' in descriptor) visit(descriptor.value);
        else { visit(descriptor.get); visit(descriptor.set); }
      }
    };
    visit(globalThis);
    Object.preventExtensions(globalThis);
    for (const target of open) {
      if (Object.isFrozen(target)) continue;  // the prelude's own error types: nothing to put back
      errorShapes.push({ target, prototype: Object.getPrototypeOf(target), extensible: Object.isExtensible(target),
                         descriptors: Object.getOwnPropertyDescriptors(target) });
    }
  }
  function sameDescriptor(now, was) {
    return now !== undefined && now.value === was.value && now.get === was.get && now.set === was.set &&
      now.writable === was.writable && now.enumerable === was.enumerable && now.configurable === was.configurable;
  }
  function putBack({ target, prototype, extensible, descriptors }) {
    if (Object.isExtensible(target) !== extensible || Object.getPrototypeOf(target) !== prototype) return false;
    for (const key of Reflect.ownKeys(target)) {
      if (!Object.prototype.hasOwnProperty.call(descriptors, key) && !Reflect.deleteProperty(target, key)) return false;
    }
    for (const key of Reflect.ownKeys(descriptors)) {
      const was = descriptors[key];
      if (!sameDescriptor(Object.getOwnPropertyDescriptor(target, key), was) &&
          !Reflect.defineProperty(target, key, was)) return false;
    }
    return true;
  }

  function finish(value) {
    try {
      outcome = { done: true, result: toPlain(value, 'result') ?? null, error: null, chain };
    } catch (error) {
      const { message } = describe(error);
      outcome = { done: true, result: null, chain,
                  error: { name: 'TypeError', message: 'the result is not JSON: ' + message, line: null,
                           code: 'result_not_serialisable' } };
    }
  }
  function fail(error) { outcome = { done: true, result: null, error: describe(error), chain }; }
  function rejection(payload) {
    const reason = parse(payload);
    const error = reason.name === 'WorkflowBudgetExceededError' ? new WorkflowBudgetExceededError(reason.message)
      : new Error(reason.message);
    if (reason.name && reason.name !== 'Error' && reason.name !== 'WorkflowBudgetExceededError') {
      Object.defineProperty(error, 'name', { value: String(reason.name) });
    }
    return error;
  }

  const methods = {
    // run: the compiled body; args: JSON text, or null when none were given (then `args` is undefined)
    start(run, argsText) {
      if (outcome.done || typeof run !== 'function') throw new Error('start() takes the compiled body once');
      const value = argsText === null ? undefined : realFreeze(parse(argsText));
      Object.defineProperty(globalThis, 'args', { value, writable: false, configurable: false, enumerable: false });
      let started;
      try {
        started = run();
      } catch (error) {
        fail(error);
        return stringify([]);
      }
      Promise.resolve(started).then(finish, fail);
      return stringify([]);
    },
    // evaluator realms: run one script (a function of its args), as `start` does for a workflow
    evaluate(run, argsText) {
      if (!EVALUATOR || typeof run !== 'function') throw new Error('evaluate() is for evaluator realms');
      calls.splice(0, calls.length);
      pending.clear();
      logs.splice(0, logs.length);
      failures.splice(0, failures.length);
      outcome = { done: false, result: null, error: null, chain: null };
      /(?:)/.exec('');  // RegExp's legacy statics ($1, lastMatch) keep no earlier script's match
      let started;
      try {
        started = run(argsText === null ? undefined : realFreeze(parse(argsText)));
      } catch (error) {
        fail(error);
        return stringify([]);
      }
      Promise.resolve(started).then(finish, fail);
      return stringify([]);
    },
    // after an evaluated script: its state, and whether the realm can take the next one (the script
    // ended, and the Error types are put back exactly)
    evaluated() {
      const state = parse(methods.state());
      let clean = outcome.done && pending.size === 0;
      for (const shape of errorShapes) clean = clean && putBack(shape);
      /(?:)/.exec('');
      return stringify({ state, clean });
    },
    takeCalls() { return stringify(calls.splice(0, calls.length)); },
    // One call per journaled result: hand over the calls made while the isolate drained after the
    // previous step, then settle `key` (ok: resolve with the JSON value; else reject with the
    // message, or with {name, message} JSON when `structured`). `after` is the chain to continue
    // from when it is not the key itself (a nested workflow continues from where it ended).
    step(newSpent, key, ok, payload, structured, after) {
      const taken = calls.splice(0, calls.length);
      spent = newSpent;
      const waiting = pending.get(key);
      if (waiting) {
        pending.delete(key);
        chain = typeof after === 'string' ? after : key;
        if (ok) waiting.resolve(parse(payload));
        else waiting.reject(structured ? rejection(payload) : new Error(payload));
      }
      return stringify(taken);
    },
    // A replay's batch of results in one message: `queueSteps` keeps them here, and each argument-less
    // `nextStep` call settles the next one exactly as `step` would. The host makes one call per result,
    // each a task of its own, so the isolate drains between them just as between `step` calls.
    queueSteps(text) {
      queued = parse(text);
      queuedAt = 0;
      return stringify([]);
    },
    nextStep() {
      if (queuedAt >= queued.length) throw new Error('nextStep() without a queued result');
      const [newSpent, key, ok, payload] = queued[queuedAt];
      queued[queuedAt++] = null;
      return methods.step(newSpent, key, ok, payload, false, null);
    },
    setBudget(newTotal, newSpent) { total = newTotal; spent = newSpent; return stringify([]); },
    state() {
      return stringify({ done: outcome.done, error: outcome.error, result: outcome.result, chain: outcome.chain,
                         logs: logs.splice(0, logs.length), failures: failures.splice(0, failures.length),
                         waiting: pending.size });
    },
  };
  realFreeze(methods);
  const host = function host(method, ...values) { return methods[method](...values); };
  // An evaluator realm also hands Python a function that can only evaluate: its argument array is
  // made by the compiled script itself (one trip to V8 instead of five), so whatever that script
  // puts there can at most evaluate it again.
  return EVALUATOR ? [host, realFreeze((run, argsText) => methods.evaluate(run, argsText))] : host;
})
