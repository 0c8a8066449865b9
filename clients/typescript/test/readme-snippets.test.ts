/**
 * The TypeScript snippets of the READMEs and the integration guide type-check as written, against
 * src/ (what `@moim/ticketing-client` compiles from): a name they use but do not define, or an
 * option the client does not have, fails here instead of in a reader's editor.
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";
import ts from "typescript";

const PACKAGE_ROOT = fileURLToPath(new URL("..", import.meta.url));
const REPO_ROOT = join(PACKAGE_ROOT, "..", "..");
const DOCUMENTS = ["README.md", "clients/typescript/README.md", "docs/moim-integration.md"];

/** The ```ts blocks of a Markdown file. */
function snippets(markdown: string): string[] {
  return [...markdown.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((match) => match[1] ?? "");
}

/** The type errors of `source`, compiled as a module of this package with its tsconfig. */
function typeErrors(source: string): string[] {
  const config = ts.readConfigFile(join(PACKAGE_ROOT, "tsconfig.json"), ts.sys.readFile);
  const { options } = ts.parseJsonConfigFileContent(config.config, ts.sys, PACKAGE_ROOT);
  // The package's exports point at dist/, which only a build makes: read src/ instead.
  options.paths = { "@moim/ticketing-client": [join(PACKAGE_ROOT, "src", "index.ts")] };
  const file = join(PACKAGE_ROOT, "test", "readme-snippet.ts");
  const host = ts.createCompilerHost(options);
  const { fileExists, readFile } = host;
  host.fileExists = (name) => name === file || fileExists(name);
  host.readFile = (name) => (name === file ? source : readFile(name));
  const program = ts.createProgram([file], options, host);
  return ts.getPreEmitDiagnostics(program).map((diagnostic) => {
    const where = diagnostic.file?.fileName === file ? "snippet" : diagnostic.file?.fileName;
    return `${where}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, " ")}`;
  });
}

for (const document of DOCUMENTS) {
  test(`the TypeScript snippets of ${document} type-check as written`, () => {
    const found = snippets(readFileSync(join(REPO_ROOT, document), "utf8"));

    assert.ok(found.length > 0, `no \`\`\`ts block in ${document}`);
    for (const [index, source] of found.entries()) {
      assert.deepEqual(typeErrors(source), [], `snippet ${index + 1} of ${document}`);
    }
  });
}
