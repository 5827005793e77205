// graphile-worker no-op throughput: JOBS jobs queued up front, then one runner at
// CONCURRENCY takes them all; prints jobs/s from runner start to the last job's
// completion being committed (runner.stop() waits for it).
// Run by bench/peers/run, which installs graphile-worker into a cache folder and
// points NODE_PATH there. Env: DATABASE_URL, JOBS (default 20000), CONCURRENCY (16).
import { run, makeWorkerUtils, Logger } from "graphile-worker";

const connectionString = process.env.DATABASE_URL;
const jobs = Number(process.env.JOBS ?? 20000);
const concurrency = Number(process.env.CONCURRENCY ?? 16);
if (!connectionString) throw new Error("graphile_bench: DATABASE_URL is not set");

// Keep warnings and errors only: per-job info lines would cost more than the jobs.
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});

const utils = await makeWorkerUtils({ connectionString, logger });
await utils.migrate();
for (let i = 0; i < jobs; i += 1000) {
  const batch = [];
  for (let j = i; j < Math.min(jobs, i + 1000); j++) batch.push({ identifier: "noop", payload: {} });
  await utils.addJobs(batch);
}
await utils.release();

let done = 0;
let finished;
const allDone = new Promise((resolve) => (finished = resolve));
const started = process.hrtime.bigint();
const runner = await run({
  connectionString,
  concurrency,
  logger,
  noHandleSignals: true,
  maxPoolSize: concurrency + 2,
  pollInterval: 1000,
  taskList: {
    noop: async () => {
      if (++done === jobs) finished();
    },
  },
});
await allDone;
await runner.stop();
const secs = Number(process.hrtime.bigint() - started) / 1e9;
const pool = new (await import("pg")).default.Pool({ connectionString });
const left = (await pool.query("select count(*)::int as n from graphile_worker._private_jobs")).rows[0].n;
await pool.end();
if (left !== 0) throw new Error(`graphile_bench: ${left} jobs still in the table after the run`);
console.log(`RESULT graphile-worker jobs=${jobs} concurrency=${concurrency} secs=${secs.toFixed(3)} jobs_per_s=${(jobs / secs).toFixed(0)}`);
