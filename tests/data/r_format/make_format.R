# Expected values for sklmm's ports of R's printing helpers (sklmm/_report/rformat.py) and of
# boot's norm.inter (sklmm/_inference/bootstrap.py).  Run from the repository root:
#   Rscript tests/data/r_format/make_format.R
# Made with R 4.2.2 Patched (boot 1.3-28.1); writes tests/data/r_format/format_cases.json.
set.seed(3)
fmt <- list()
for (i in 1:150) {
  n <- sample(1:5, 1)
  mag <- sample(c(-9, -4, -2, -1, 0, 0, 1, 1, 2, 3, 5), n, replace = TRUE)
  x <- round(rnorm(n) * 10^mag, sample(0:8, 1))
  if (runif(1) < 0.1) x[1] <- 0
  d <- sample(c(3, 4, 5, 7), 1)
  ns <- sample(c(0, 0, 2, 3), 1)
  fmt[[i]] <- list(x = x, digits = d, nsmall = ns, formatted = format(x, digits = d, nsmall = ns))
}
zap <- list()
for (i in 1:40) {
  x <- rnorm(5) * 10^sample(-3:3, 1)
  d <- sample(3:6, 1)
  zap[[i]] <- list(x = x, digits = d, zapped = zapsmall(x, d), rounded = round(x, d - 1))
}
names_in <- c("(Intercept)", "Days", "lincomep", "time", "lrpmg", "meanses", "cses",
              "meanses_cses", "temp", "x1", "x2", "gcsecnt", "Reaction", "sepal width",
              "abcdefghijklmnop", "PetalLength", "AGE", "treatmentB:timeLate")
abbr <- list()
for (m in c(1, 4, 6, 11)) abbr[[as.character(m)]] <- unname(abbreviate(names_in, minlength = m))
ninter <- list()
for (i in 1:20) {
  R <- sample(c(19, 39, 100, 199, 500, 999), 1)
  t <- rnorm(R)
  alpha <- c(0.025, 0.975, 0.05, 0.95, 0.005)
  ninter[[i]] <- list(t = t, alpha = alpha, out = unname(boot:::norm.inter(t, alpha)[, 2]))
}
out <- list(versions = list(R = R.version.string, boot = as.character(packageVersion("boot"))),
            format = fmt, zapsmall = zap, abbreviate = list(names = names_in, by_minlength = abbr),
            norm_inter = ninter)
writeLines(jsonlite::toJSON(out, digits = NA, auto_unbox = TRUE, pretty = FALSE),
           "tests/data/r_format/format_cases.json")
