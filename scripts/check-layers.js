#!/usr/bin/env node
// Dependencies point one way: components (daemon/, manager/, agent/) import
// from src/, never from each other; src/ never imports a component.
const fs = require('fs');
const path = require('path');
const root = path.resolve(__dirname, '..');
const components = ['daemon', 'manager', 'agent'];
let bad = 0;
function walk(dir, fn) {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) { if (e.name !== 'gen') walk(p, fn); } else if (p.endsWith('.ts')) fn(p);
  }
}
for (const top of ['src', ...components]) {
  walk(path.join(root, top), (file) => {
    const text = fs.readFileSync(file, 'utf8');
    for (const m of text.matchAll(/from '(\.[^']+)'/g)) {
      const target = path.relative(root, path.resolve(path.dirname(file), m[1])).split(path.sep)[0];
      if (target === top || target === 'src') continue;
      if (components.includes(target) || target === 'test' || target === 'bin') {
        console.error(`${path.relative(root, file)} imports ${m[1]} (${top}/ must not depend on ${target}/)`);
        bad++;
      }
    }
  });
}
if (bad) process.exit(1);
console.log('layers ok');
