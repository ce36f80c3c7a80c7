# One rslurm measurement, driven by bench/run.py:
#   Rscript --vanilla rslurm_bench.R WORKLOAD N_ROWS NODES CPUS JOBNAME MODE
# run in the directory that is to hold _rslurm_<JOBNAME>/. WORKLOAD is tiny, skewed, wide or
# failure; MODE is "user" (get_slurm_out(wait = TRUE), which blocks on a dummy dependent job, as
# an rslurm user waits) or "poll" (look for every results_<i>.RDS every 50 ms, then read them with
# wait = FALSE: rslurm minus its waiting scheme). Prints key=value lines; timings in seconds from
# the slurm_apply() call, after the parameters are built, as bench/run.py times slurm_apply.
suppressPackageStartupMessages(library(rslurm))

args <- commandArgs(trailingOnly = TRUE)
workload <- args[1]
n <- as.integer(args[2])
nodes <- as.integer(args[3])
cpus <- as.integer(args[4])
jobname <- args[5]
mode <- args[6]

if (workload == "tiny") {
  f <- function(a, b) a + b
  params <- data.frame(a = seq_len(n) - 1L, b = seq_len(n) - 1L)
} else if (workload == "skewed") {
  f <- function(i) { Sys.sleep(if (i < 4) 3 else 0.05); i }
  params <- data.frame(i = seq_len(n) - 1L)
} else if (workload == "wide") {
  f <- function(c0, c1, c2, c3, c4, c5, c6, c7, c8, c9) c0 + c9
  set.seed(0)
  params <- as.data.frame(setNames(lapply(0:9, function(k) runif(n)), paste0("c", 0:9)))
} else if (workload == "failure") {
  f <- function(i) { if (i == 37) stop("row 37 fails on purpose"); i }
  params <- data.frame(i = seq_len(n) - 1L)
} else {
  stop("unknown workload ", workload)
}

now <- function() proc.time()[["elapsed"]]
t0 <- now()
sjob <- slurm_apply(f, params, jobname = jobname, nodes = nodes, cpus_per_node = cpus, submit = TRUE)
t_submit <- now()
if (mode == "poll") {
  dir <- paste0("_rslurm_", jobname)
  files <- file.path(dir, paste0("results_", 0:(sjob$nodes - 1), ".RDS"))
  repeat {
    if (all(file.exists(files))) {
      # saveRDS writes in place, so a file can exist half-written: retry until all read.
      t_collect <- now()
      out <- tryCatch(suppressWarnings(get_slurm_out(sjob, outtype = "table", wait = FALSE)),
                      error = function(e) NULL)
      collect_s <- now() - t_collect
      if (!is.null(out) && nrow(out) == n) break
    }
    Sys.sleep(0.05)
  }
} else {
  out <- suppressWarnings(get_slurm_out(sjob, outtype = "table", wait = TRUE))
}
t_end <- now()

if (workload == "failure") {
  dir <- paste0("_rslurm_", jobname)
  raw <- do.call(c, lapply(0:(sjob$nodes - 1), function(k) readRDS(file.path(dir, paste0("results_", k, ".RDS")))))
  good <- vapply(raw, function(v) !inherits(v, "try-error"), logical(1))
  cat(sprintf("good_rows=%d\n", sum(good)))
  cat(sprintf("good_rows_correct=%s\n", all(unlist(raw[good]) == which(good) - 1L)))
}
cat(sprintf("job_id=%s\n", sjob$jobid))
cat(sprintf("n_tasks=%d\n", sjob$nodes))
cat(sprintf("rows_out=%d\n", if (is.data.frame(out)) nrow(out) else length(out)))
cat(sprintf("submit_s=%.4f\n", t_submit - t0))
cat(sprintf("end_to_end_s=%.4f\n", t_end - t0))
if (mode == "poll") cat(sprintf("collect_s=%.4f\n", collect_s))
