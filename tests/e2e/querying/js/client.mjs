// Runs @clickhouse/client against the URL in argv[2]; prints one JSON line of what it got.
import { createClient } from "@clickhouse/client";

const client = createClient({ url: process.argv[2], username: "default", password: "" });
const out = {};
out.ping = (await client.ping()).success;
const rs = await client.query({
  query: "SELECT event, count() AS n FROM pbx.events WHERE event != {e: String} GROUP BY event ORDER BY event",
  query_params: { e: "none" },
  format: "JSONEachRow",
});
out.rows = await rs.json();
const typed = await client.query({ query: "SELECT toUInt64(7) AS u, [1, 2] AS a, 'x' AS s", format: "JSON" });
out.typed = await typed.json();
const compressed = createClient({ url: process.argv[2], compression: { response: true } });
out.compressed = await (await compressed.query({ query: "SELECT number FROM numbers(3)", format: "JSONEachRow" })).json();
try {
  await client.command({ query: "INSERT INTO pbx.queue_settings (queue) VALUES ('q')" });
  out.insert = "accepted";
} catch (e) {
  out.insert = { code: e.code, type: e.type, message: e.message };
}
try {
  await client.query({ query: "SELECT * FROM pbx.nope", format: "JSONEachRow" });
} catch (e) {
  out.error = { code: e.code, type: e.type };
}
await client.close();
await compressed.close();
console.log(JSON.stringify(out));
