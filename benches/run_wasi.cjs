// Runs a WASI command module (wasm32-wasip1) in Node's V8, the engine Envoy
// runs fpgen in. Imports other than WASI (proxy-wasm's host functions,
// which benches/steps links but never calls) trap if called.
//   node benches/run_wasi.cjs module.wasm
'use strict';
const { WASI } = require('node:wasi');
const fs = require('node:fs');
const wasi = new WASI({ version: 'preview1', args: [], env: {} });
const wasm = new WebAssembly.Module(fs.readFileSync(process.argv[2]));
const imports = { wasi_snapshot_preview1: wasi.wasiImport };
for (const i of WebAssembly.Module.imports(wasm)) {
  if (i.module === 'wasi_snapshot_preview1') continue;
  imports[i.module] = imports[i.module] || {};
  imports[i.module][i.name] = () => { throw new Error(`host call ${i.module}.${i.name}`); };
}
const instance = new WebAssembly.Instance(wasm, imports);
// proxy-wasm's `_initialize` (linked from the library) is not this
// command's: Node's WASI refuses a module with both, so hand it the two
// exports a command needs.
wasi.start({ exports: { _start: instance.exports._start, memory: instance.exports.memory } });
