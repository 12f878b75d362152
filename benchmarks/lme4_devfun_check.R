# lme4's own objective at sklmm's theta and around it.
#
# Rscript benchmarks/lme4_devfun_check.R CHECK.json [OUT.json]
#
# CHECK.json (written by `python -m benchmarks.crossed_large`) names a problem
# folder of raw column files (benchmarks/problems.py, Problem.save: NAME.f64
# little-endian doubles, NAME.i32 0-based level codes), the lme4 formula, REML,
# and a list of points: {label, theta, sklmm}, sklmm's theta_hat first, then
# theta_hat with one component multiplied by (1 -/+ step).
#
# Builds lme4's deviance function with lmer(..., devFunOnly = TRUE) (the
# setup includes CHOLMOD's symbolic analysis and one numeric factorisation),
# evaluates it at every point, timing each evaluation (proc.time elapsed),
# prints a table (theta, lme4 devfun, sklmm objective, difference) and writes
# OUT.json.  The confirmation holds when lme4's value at sklmm's theta equals
# sklmm's objective and every neighbour is higher.
#
# CHOLMOD's dense supernodes run through R's BLAS: run this script with
# OpenBLAS first on the library path (the Python driver sets
# R_LD_LIBRARY_PATH and LD_LIBRARY_PATH); the BLAS and LAPACK in use are
# printed and recorded (sessionInfo()).
args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) stop("usage: Rscript lme4_devfun_check.R CHECK.json [OUT.json]")
suppressMessages({
  library(jsonlite)
  library(lme4)
})
check <- fromJSON(args[1], simplifyVector = FALSE)
out_path <- if (length(args) >= 2) args[2] else ""

info <- sessionInfo()
blas <- info$BLAS
lapack <- info$LAPACK
cat(sprintf("R %s, lme4 %s\nBLAS:   %s\nLAPACK: %s\n", getRversion(), packageVersion("lme4"), blas, lapack))

folder <- check$folder
n <- as.integer(check$n)
data <- list()
for (name in names(check$columns)) {
  kind <- check$columns[[name]]
  path <- file.path(folder, paste0(name, ".", kind))
  if (kind == "f64") {
    data[[name]] <- readBin(path, "double", n = n, size = 8, endian = "little")
  } else {
    data[[name]] <- factor(readBin(path, "integer", n = n, size = 4, endian = "little"))
  }
}
data <- as.data.frame(data, check.names = FALSE)
# lme4 orders the random-effects terms by decreasing number of levels (as sklmm's theta_).
groups <- unlist(check$groups)
levels_of <- sort(sapply(groups, function(g) nlevels(data[[g]]), USE.NAMES = TRUE), decreasing = TRUE)
cat(sprintf("%s rows; terms in theta's order: %s\n", format(n, big.mark = ","),
            paste(sprintf("%s (%s levels)", names(levels_of), format(levels_of, big.mark = ",")), collapse = ", ")))

before <- proc.time()
devfun <- lmer(as.formula(check$formula), data = data, REML = isTRUE(check$reml), devFunOnly = TRUE)
used <- proc.time() - before
setup_seconds <- used[["elapsed"]]
setup_cpu <- used[["user.self"]] + used[["sys.self"]]
cat(sprintf("lmer(..., devFunOnly = TRUE): %.2f s, CPU %.2f s (model frame, CHOLMOD analysis, one factorisation)\n", setup_seconds, setup_cpu))

points <- check$points
rows <- vector("list", length(points))
for (k in seq_along(points)) {
  theta <- as.numeric(unlist(points[[k]]$theta))
  before <- proc.time()
  value <- devfun(theta)
  used <- proc.time() - before
  seconds <- used[["elapsed"]]
  cpu <- used[["user.self"]] + used[["sys.self"]]  # all of R's threads: less sensitive to other load
  sklmm <- if (is.null(points[[k]]$sklmm)) NA_real_ else as.numeric(points[[k]]$sklmm)
  rows[[k]] <- list(label = points[[k]]$label, theta = theta, lme4 = value, sklmm = sklmm, seconds = seconds, cpu_seconds = cpu)
  cat(sprintf("%-22s theta = (%s)  lme4 %.10f  sklmm %.10f  lme4 - sklmm %+.3e  [%.2f s, CPU %.2f s]\n",
              points[[k]]$label, paste(sprintf("%.8g", theta), collapse = ", "), value, sklmm,
              value - sklmm, seconds, cpu))
  flush(stdout())
}

at_hat <- rows[[1]]$lme4
neighbours <- if (length(rows) > 1) sapply(rows[-1], function(r) r$lme4) else numeric(0)
relative <- (at_hat - rows[[1]]$sklmm) / abs(rows[[1]]$sklmm)
higher <- all(neighbours > at_hat)
cat(sprintf("\nlme4 at sklmm's theta - sklmm's objective: %+.3e (relative %+.2e); every neighbour higher: %s (smallest rise %.3e)\n",
            at_hat - rows[[1]]$sklmm, relative, higher,
            if (length(neighbours)) min(neighbours - at_hat) else NA_real_))

result <- list(
  R = as.character(getRversion()), lme4 = as.character(packageVersion("lme4")),
  blas = blas, lapack = lapack, n = n, levels = as.list(levels_of),
  setup_seconds = setup_seconds, setup_cpu_seconds = setup_cpu, points = rows,
  relative_difference = relative, neighbours_higher = higher
)
if (nzchar(out_path)) writeLines(toJSON(result, auto_unbox = TRUE, digits = NA, pretty = TRUE), out_path)
