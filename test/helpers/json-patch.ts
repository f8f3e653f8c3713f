// RFC 6902 JSON Patch, applied the way the apiserver applies a webhook's
// patch: every operation in order on a deep copy; a path that does not
// exist (or an index out of range) is an error, not a silent no-op.

export interface Op {
  op: string;
  path: string;
  value?: unknown;
  from?: string;
}

type Json = unknown;

/** RFC 6901: "/a/b~1c" -> ["a", "b/c"]. */
export function parsePointer(p: string): string[] {
  if (p === '') return [];
  if (!p.startsWith('/')) throw new Error(`JSON pointer "${p}" must start with "/"`);
  return p.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function isObject(v: Json): v is Record<string, Json> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function index(arr: Json[], token: string, path: string, forAdd: boolean): number {
  if (forAdd && token === '-') return arr.length;
  if (!/^(0|[1-9][0-9]*)$/.test(token)) throw new Error(`${path}: "${token}" is not an array index`);
  const i = Number(token);
  if (i > arr.length || (!forAdd && i === arr.length)) throw new Error(`${path}: index ${i} out of range (length ${arr.length})`);
  return i;
}

/** The container of the last token, which must exist. */
function parentOf(doc: Json, tokens: string[], path: string): Json {
  let cur = doc;
  for (const t of tokens.slice(0, -1)) {
    if (Array.isArray(cur)) cur = cur[index(cur, t, path, false)];
    else if (isObject(cur) && t in cur) cur = cur[t];
    else throw new Error(`${path}: "${t}" does not exist`);
  }
  if (!Array.isArray(cur) && !isObject(cur)) throw new Error(`${path}: parent is not a container`);
  return cur;
}

function get(doc: Json, path: string): Json {
  const tokens = parsePointer(path);
  if (tokens.length === 0) return doc;
  const parent = parentOf(doc, tokens, path);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) return parent[index(parent, last, path, false)];
  const o = parent as Record<string, Json>;
  if (!(last in o)) throw new Error(`${path} does not exist`);
  return o[last];
}

function add(doc: Json, path: string, value: Json): Json {
  const tokens = parsePointer(path);
  if (tokens.length === 0) return value;
  const parent = parentOf(doc, tokens, path);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) parent.splice(index(parent, last, path, true), 0, value);
  else (parent as Record<string, Json>)[last] = value;
  return doc;
}

function remove(doc: Json, path: string): Json {
  const tokens = parsePointer(path);
  if (tokens.length === 0) throw new Error('cannot remove the whole document');
  const parent = parentOf(doc, tokens, path);
  const last = tokens[tokens.length - 1];
  if (Array.isArray(parent)) parent.splice(index(parent, last, path, false), 1);
  else {
    const o = parent as Record<string, Json>;
    if (!(last in o)) throw new Error(`${path} does not exist`);
    delete o[last];
  }
  return doc;
}

export function applyPatch<T>(input: T, ops: Op[]): T {
  let doc: Json = structuredClone(input);
  for (const op of ops) {
    const clone = (v: Json): Json => structuredClone(v);
    switch (op.op) {
      case 'add': doc = add(doc, op.path, clone(op.value)); break;
      case 'remove': doc = remove(doc, op.path); break;
      case 'replace': get(doc, op.path); doc = add(remove(doc, op.path), op.path, clone(op.value)); break;
      case 'copy': doc = add(doc, op.path, clone(get(doc, op.from ?? ''))); break;
      case 'move': { const v = get(doc, op.from ?? ''); doc = add(remove(doc, op.from ?? ''), op.path, v); break; }
      case 'test':
        if (JSON.stringify(get(doc, op.path)) !== JSON.stringify(op.value)) throw new Error(`test ${op.path} failed`);
        break;
      default: throw new Error(`unknown op "${op.op}"`);
    }
  }
  return doc as T;
}
