#!/usr/bin/env node
// Validate Istio and cert-manager resources offline.
//
//   node k8s/validate/validate-istio.mjs FILE...
//
// Every YAML document of API group *.istio.io is checked with the
// matching @kubernetes-models/istio class (generated from Istio 1.29's CRD
// schemas), every one of *cert-manager.io with @kubernetes-models/cert-manager
// 6.0.0 (its schemas have Certificate nameConstraints, otherNames and
// signatureAlgorithm: cert-manager 1.18 or newer). Documents of other API groups
// are skipped. An apiVersion/kind of these groups that the library does not know
// is an error.
//
// Strictness: the library's compiled schemas carry no `additionalProperties:
// false`, so they accept unknown fields (a typo such as `phasee:` passes).
// We add that check ourselves: the validator runs a second time on a Proxy
// that records which keys it reads. In an object whose schema declares
// properties the validator reads every declared key, so a key it never read
// is unknown to the schema. Objects the validator never looks inside
// (x-kubernetes-preserve-unknown-fields, e.g. WasmPlugin pluginConfig) are
// free-form and are not checked.
//
// Prints one line per document ("Kind/[namespace/]name: ok" or "...: error: ...")
// and exits 1 if any document failed.

import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as istio from "@kubernetes-models/istio";
import * as certManager from "@kubernetes-models/cert-manager/cert-manager.io/v1";

// API group istio.io or *.istio.io (networking, security, telemetry, extensions, ...), or
// cert-manager's.
function isChecked(doc) {
  const group = typeof doc.apiVersion === "string" ? doc.apiVersion.split("/")[0] : "";
  return group === "istio.io" || group.endsWith(".istio.io") || group.endsWith("cert-manager.io");
}

// "group/version/Kind" -> model class, built from the libraries' exports.
function buildRegistry() {
  const registry = new Map();
  const add = (cls) => {
    if (typeof cls === "function" && cls.apiVersion && cls.kind) {
      registry.set(`${cls.apiVersion}/${cls.kind}`, cls);
    }
  };
  for (const group of Object.values(istio)) {
    for (const version of Object.values(group)) {
      Object.values(version).forEach(add);
    }
  }
  Object.values(certManager).forEach(add);
  return registry;
}

// Wrap `root` so that every property read is recorded per object.
function track(root) {
  const reads = new Map(); // target object -> Set of keys read
  const proxies = new WeakMap();
  const wrap = (obj) => {
    if (obj === null || typeof obj !== "object") return obj;
    if (proxies.has(obj)) return proxies.get(obj);
    const seen = new Set();
    reads.set(obj, seen);
    const proxy = new Proxy(obj, {
      get(target, key, receiver) {
        if (typeof key === "string") seen.add(key);
        const value = Reflect.get(target, key, receiver);
        return typeof value === "function" ? value : wrap(value);
      },
    });
    proxies.set(obj, proxy);
    return proxy;
  };
  return { proxy: wrap(root), reads };
}

// Keys present in the data that the validator never read, as JSON paths.
function unknownFields(obj, reads, path = "") {
  if (obj === null || typeof obj !== "object") return [];
  const seen = reads.get(obj);
  if (!seen || seen.size === 0) return []; // free-form: validator never looked inside
  const out = [];
  const arrayLike = Array.isArray(obj);
  for (const key of Object.keys(obj)) {
    const child = `${path}${arrayLike ? `[${key}]` : `.${key}`}`;
    if (!arrayLike && !seen.has(key)) out.push(child);
    else out.push(...unknownFields(obj[key], reads, child));
  }
  return out;
}

function validateDoc(registry, doc) {
  const cls = registry.get(`${doc.apiVersion}/${doc.kind}`);
  if (!cls) return `unknown apiVersion/kind ${doc.apiVersion} ${doc.kind}`;
  const model = new cls(doc);
  try {
    model.validate();
  } catch (err) {
    return err.message;
  }
  const { proxy, reads } = track(model);
  cls.prototype.validate.call(proxy);
  const unknown = unknownFields(model, reads);
  return unknown.length ? `unknown field(s) ${unknown.join(", ")}` : null;
}

function main(files) {
  if (files.length === 0) {
    console.error("usage: validate-istio.mjs FILE...");
    return 2;
  }
  const registry = buildRegistry();
  let failed = 0;
  let passed = 0;
  for (const file of files) {
    let text;
    try {
      text = readFileSync(file, "utf8");
    } catch (err) {
      console.log(`${file}: error: ${err.message}`);
      failed++;
      continue;
    }
    const docs = parseAllDocuments(text);
    for (const parsed of docs) {
      if (parsed.errors.length) {
        console.log(`${file}: error: YAML: ${parsed.errors[0].message.split("\n")[0]}`);
        failed++;
        continue;
      }
      const doc = parsed.toJS();
      if (!doc) continue; // empty document
      if (!isChecked(doc)) continue;
      const ns = doc.metadata?.namespace ? `${doc.metadata.namespace}/` : "";
      const label = `${doc.kind}/${ns}${doc.metadata?.name ?? "?"}`;
      const error = validateDoc(registry, doc);
      if (error) {
        failed++;
        console.log(`${label}: error: ${error}`);
      } else {
        passed++;
        console.log(`${label}: ok`);
      }
    }
  }
  console.log(`istio + cert-manager: ${passed} passed, ${failed} failed`);
  return failed ? 1 : 0;
}

process.exitCode = main(process.argv.slice(2));
