#!/usr/bin/env Rscript
## Hard designs for sklmm's robustness tests (tests/test_hard_designs.py), fitted with lme4.
##
## Usage:  Rscript make_hard.R [output_dir]     (default: the folder holding this script)
##
## One sub-folder per case with data.csv (what lme4 saw: the fits use the CSV as read back)
## and reference.json ({"reml": {...}, "ml": {...}}, see README.md). Every fit is
## lmer(<formula>, data = d, REML = TRUE/FALSE) with lme4's default control.
## Grouping columns are written as strings and read back as factors with levels sorted in
## the C locale.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
RNGkind("Mersenne-Twister", "Inversion", "Rejection")
invisible(Sys.setlocale("LC_COLLATE", "C"))

args <- commandArgs(trailingOnly = TRUE)
if (length(args) >= 1) {
  out_root <- args[1]
} else {
  file_arg <- grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE)
  out_root <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "."
}
dir.create(out_root, showWarnings = FALSE, recursive = TRUE)

write_json_file <- function(x, path) {
  writeLines(toJSON(x, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"), path)
}

write_and_reload <- function(df, dir, group_cols) {
  path <- file.path(dir, "data.csv")
  for (g in group_cols) df[[g]] <- as.character(df[[g]])
  write.csv(df, path, row.names = FALSE)
  cc <- setNames(rep("character", length(group_cols)), group_cols)
  d <- read.csv(path, colClasses = cc)
  for (g in group_cols) d[[g]] <- factor(d[[g]], levels = sort(unique(d[[g]]), method = "radix"))
  d
}

fit_one <- function(formula_str, d, REML, weights = NULL) {
  warns <- character(0)
  msgs <- character(0)
  form <- as.formula(formula_str, env = environment())
  d$.w <- if (is.null(weights)) rep(1, nrow(d)) else d[[weights]]
  fit <- withCallingHandlers(
    lmer(form, data = d, REML = REML, weights = .w),
    warning = function(w) { warns <<- c(warns, conditionMessage(w)); invokeRestart("muffleWarning") },
    message = function(m) { msgs <<- c(msgs, sub("\n$", "", conditionMessage(m))); invokeRestart("muffleMessage") }
  )
  vc <- as.data.frame(VarCorr(fit))
  vc_rows <- lapply(seq_len(nrow(vc)), function(i) {
    r <- list(grp = as.character(vc$grp[i]))
    if (!is.na(vc$var1[i])) r$var1 <- as.character(vc$var1[i])
    if (!is.na(vc$var2[i])) r$var2 <- as.character(vc$var2[i])
    r$vcov <- vc$vcov[i]
    r$sdcor <- vc$sdcor[i]
    r
  })
  beta <- fixef(fit)
  dropped <- attr(getME(fit, "X"), "col.dropped")
  objective <- if (REML) fit@devcomp$cmp[["REML"]] else fit@devcomp$cmp[["dev"]]
  ## the criterion at lme4's starting value of theta (1 on the diagonal, 0 elsewhere)
  devfun <- lmer(form, data = d, REML = REML, weights = .w, devFunOnly = TRUE)
  theta0 <- getME(fit, "lower")
  theta0 <- ifelse(theta0 == 0, 1, 0)
  list(
    objective = unname(objective),
    objective_at_start = devfun(theta0),
    theta = I(unname(getME(fit, "theta"))),
    sigma = sigma(fit),
    coef = as.list(beta),
    coef_se = as.list(setNames(sqrt(diag(as.matrix(vcov(fit)))), names(beta))),
    dropped = I(if (is.null(dropped)) character(0) else names(dropped)),
    varcorr = vc_rows,
    singular = isSingular(fit),
    warnings = I(warns),
    messages = I(msgs)
  )
}

## equivalent: optionally list(df = , formula = ) of the same model written on well-scaled
## columns (a covariate rescaled or recentred); its lme4 optimum is stored as
## objective_equivalent: the optimum the hard case must reach.
run_case <- function(name, df, response, fixed, groups, random_effects, lme4_formula, notes,
                     equivalent = NULL, weights = NULL) {
  dir <- file.path(out_root, name)
  dir.create(dir, showWarnings = FALSE, recursive = TRUE)
  d <- write_and_reload(df, dir, groups)
  spec <- list(response = response, fixed = I(fixed), groups = I(groups),
               random_effects = random_effects, lme4_formula = lme4_formula,
               n = nrow(d), notes = notes)
  if (!is.null(weights)) spec$weights <- weights
  write_json_file(spec, file.path(dir, "spec.json"))
  ref <- list(reml = fit_one(lme4_formula, d, TRUE, weights), ml = fit_one(lme4_formula, d, FALSE, weights))
  if (!is.null(equivalent)) {
    for (m in c("reml", "ml")) {
      e <- fit_one(equivalent$formula, equivalent$df, m == "reml")
      ref[[m]]$objective_equivalent <- e$objective
      ref[[m]]$equivalent_formula <- equivalent$formula
    }
  }
  write_json_file(ref, file.path(dir, "reference.json"))
  for (m in c("reml", "ml")) {
    r <- ref[[m]]
    cat(sprintf("%-18s %-4s obj=%.6f equiv=%s start=%.4f theta=%s singular=%s dropped=%s | %s\n",
                name, m, r$objective, format(r$objective_equivalent, nsmall = 6), r$objective_at_start,
                paste(signif(r$theta, 4), collapse = ","), r$singular,
                paste(r$dropped, collapse = ","), paste(c(r$warnings, r$messages), collapse = " | ")))
  }
}

lab <- function(prefix, n) sprintf("%s%02d", prefix, seq_len(n))
ss <- lme4::sleepstudy

## ---- scales: covariates at 1e-6 and 1e6, random slope on the small one
set.seed(1)
g <- rep(lab("g", 24), each = 10); n <- length(g)
u0 <- rnorm(24, sd = 2); u1 <- rnorm(24, sd = 1)
x_small <- signif(rnorm(n) * 1e-6, 6); x_big <- signif(rnorm(n) * 1e6, 6)
gi <- match(g, lab("g", 24))
y <- 5 + 2e6 * x_small + 3e-6 * x_big + u0[gi] + u1[gi] * x_small * 1e6 + rnorm(n)
d1 <- data.frame(y = signif(y, 8), x_small, x_big, g)
run_case("scales", d1, "y", c("x_small", "x_big"), "g",
         "(1 + x_small | g)", "y ~ 1 + x_small + x_big + (1 + x_small | g)",
         "x_small ~ 1e-6, x_big ~ 1e6; the random slope's sd is about 1e6 (theta about 1e6)",
         equivalent = list(df = transform(d1, x_small = x_small * 1e6, x_big = x_big * 1e-6),
                           formula = "y ~ 1 + x_small + x_big + (1 + x_small | g)"))

## ---- scales_big_slope: random slope on the 1e6 covariate (theta about 1e-6)
set.seed(2)
x_small <- signif(rnorm(n) * 1e-6, 6); x_big <- signif(rnorm(n) * 1e6, 6)
y <- 5 + 2e6 * x_small + 3e-6 * x_big + u0[gi] + u1[gi] * x_big * 1e-6 + rnorm(n)
d2 <- data.frame(y = signif(y, 8), x_small, x_big, g)
run_case("scales_big_slope", d2, "y", c("x_small", "x_big"), "g",
         "(1 + x_big | g)", "y ~ 1 + x_small + x_big + (1 + x_big | g)",
         "random slope on the 1e6 covariate: its theta is about 1e-6",
         equivalent = list(df = transform(d2, x_small = x_small * 1e6, x_big = x_big * 1e-6),
                           formula = "y ~ 1 + x_small + x_big + (1 + x_big | g)"))

## ---- y_shift: sleepstudy with 1e6 added to the response
run_case("y_shift", data.frame(y = ss$Reaction + 1e6, Days = ss$Days, Subject = ss$Subject), "y", "Days", "Subject",
         "(1 + Days | Subject)", "y ~ 1 + Days + (1 + Days | Subject)",
         "sleepstudy, Reaction + 1e6: the same fit as sleepstudy, intercept + 1e6",
         equivalent = list(df = ss, formula = "Reaction ~ 1 + Days + (1 + Days | Subject)"))

## ---- y_shift_1e9: the same with 1e9 added
run_case("y_shift_1e9", data.frame(y = ss$Reaction + 1e9, Days = ss$Days, Subject = ss$Subject), "y", "Days", "Subject",
         "(1 + Days | Subject)", "y ~ 1 + Days + (1 + Days | Subject)",
         "sleepstudy, Reaction + 1e9: the same fit as sleepstudy, intercept + 1e9",
         equivalent = list(df = ss, formula = "Reaction ~ 1 + Days + (1 + Days | Subject)"))

## ---- x_offset: sleepstudy with the covariate shifted to calendar years
run_case("x_offset", data.frame(Reaction = ss$Reaction, Year = ss$Days + 2000, Subject = ss$Subject),
         "Reaction", "Year", "Subject",
         "(1 + Year | Subject)", "Reaction ~ 1 + Year + (1 + Year | Subject)",
         "sleepstudy with Days + 2000: the same model as sleepstudy, reparametrised (same optimum)",
         equivalent = list(df = ss, formula = "Reaction ~ 1 + Days + (1 + Days | Subject)"))

## ---- boundary_zero: no between-group variance (variance at 0)
set.seed(3)
g <- rep(lab("g", 15), each = 8); n <- length(g)
x <- round(rnorm(n), 3)
e <- rnorm(n)
y <- 1 + 0.5 * x + e - ave(e, g)
run_case("boundary_zero", data.frame(y = round(y, 4), x, g), "y", "x", "g", "(1 | g)", "y ~ 1 + x + (1 | g)",
         "no group effect and the noise centred within groups: the group variance is estimated at 0")

## ---- boundary_cor: intercept and slope effects perfectly correlated (correlation +1)
set.seed(1)
g <- rep(lab("g", 20), each = 12); n <- length(g); gi <- match(g, lab("g", 20))
x <- round(runif(n, 0, 5), 3)
u <- rnorm(20, sd = 1)
y <- 2 + x + u[gi] - 0.3 * u[gi] * x + rnorm(n, sd = 1)
run_case("boundary_cor", data.frame(y = round(y, 4), x, g), "y", "x", "g", "(1 + x | g)", "y ~ 1 + x + (1 + x | g)",
         "slope effect = -0.3 * intercept effect: lme4 estimates the correlation at -1 (theta[3] = 0)")

## ---- boundary_crossed: (1 + x || g) + (1 | h) with the slope variance at 0 and h's variance > 0
set.seed(13)
g <- rep(lab("g", 16), each = 10); n <- length(g); gi <- match(g, lab("g", 16))
h <- rep(lab("h", 10), times = 16)
x <- round(rnorm(n), 3)
e <- rnorm(n, sd = 0.7)
y <- 1 + x + rnorm(16)[gi] + rnorm(10, sd = 0.8)[match(h, lab("h", 10))] + e
run_case("boundary_crossed", data.frame(y = round(y, 4), x, g, h), "y", "x", c("g", "h"),
         "(1 + x || g) + (1 | h)", "y ~ 1 + x + (1 + x || g) + (1 | h)",
         "no random slope in the simulation: the (0 + x | g) variance is estimated at (or near) 0")

## ---- many_levels: one level per two rows, crossed with a 10-level factor
set.seed(5)
n <- 300
g <- sprintf("g%03d", rep(1:150, each = 2)); h <- sprintf("h%02d", sample(1:10, n, replace = TRUE))
x <- round(rnorm(n), 3)
y <- 1 + x + rnorm(150, sd = 1)[rep(1:150, each = 2)] + rnorm(10, sd = 0.7)[match(h, sprintf("h%02d", 1:10))] + rnorm(n, sd = 0.8)
run_case("many_levels", data.frame(y = round(y, 4), x, g, h), "y", "x", c("g", "h"),
         "(1 | g) + (1 | h)", "y ~ 1 + x + (1 | g) + (1 | h)", "150 levels of g, two rows each")

## ---- singletons: most levels have a single observation
set.seed(6)
sizes <- c(rep(1, 30), sample(3:15, 20, replace = TRUE))
g <- rep(lab("g", 50), times = sizes); n <- length(g)
x <- round(rnorm(n), 3)
y <- 3 - x + rnorm(50, sd = 1.2)[match(g, lab("g", 50))] + rnorm(n)
run_case("singletons", data.frame(y = round(y, 4), x, g), "y", "x", "g", "(1 | g)", "y ~ 1 + x + (1 | g)",
         "30 of 50 levels have one row")

## ---- unbalanced: group sizes from 1 to 60, random slope, crossed with an unbalanced factor
set.seed(7)
sizes <- pmax(1, round(60 * (1:25 / 25)^3))
g <- rep(lab("g", 25), times = sizes); n <- length(g); gi <- match(g, lab("g", 25))
h <- sample(lab("h", 6), n, replace = TRUE, prob = c(0.5, 0.2, 0.1, 0.1, 0.05, 0.05))
x <- round(rnorm(n, 2), 3)
U <- matrix(rnorm(50), 25) %*% chol(matrix(c(1, 0.4, 0.4, 0.5), 2))
y <- 1 + 0.5 * x + U[gi, 1] + U[gi, 2] * x + rnorm(6, sd = 0.5)[match(h, lab("h", 6))] + rnorm(n)
run_case("unbalanced", data.frame(y = round(y, 4), x, g, h), "y", "x", c("g", "h"),
         "(1 + x | g) + (1 | h)", "y ~ 1 + x + (1 + x | g) + (1 | h)", "group sizes 1..60 (cubic), h very unbalanced")

## ---- rank_deficient: aliased fixed-effect columns (lme4 drops them)
set.seed(8)
g <- rep(lab("g", 12), each = 10); n <- length(g)
x1 <- round(rnorm(n), 3); x2 <- round(rnorm(n), 3)
d8 <- data.frame(x1 = x1, x2 = x2, x3 = x1 + x2, five = 5, x5 = 2 * x1, x6 = x2 - x1 + round(rnorm(n), 3))
y <- 1 + x1 - x2 + 0.5 * d8$x6 + rnorm(12)[match(g, lab("g", 12))] + rnorm(n)
run_case("rank_deficient", cbind(data.frame(y = round(y, 4)), d8, g = g), "y", names(d8), "g",
         "(1 | g)", "y ~ 1 + x1 + x2 + x3 + five + x5 + x6 + (1 | g)",
         "x3 = x1 + x2, five = 5 (the intercept), x5 = 2 x1: lme4 drops x3, five and x5")

## ---- rank_deficient_first: the combination comes first, and a column of zeros
set.seed(9)
x1 <- round(rnorm(n), 3); x2 <- round(rnorm(n), 3)
d9 <- data.frame(zero = 0, s = x1 + x2, x1 = x1, x2 = x2)
y <- 2 + x1 + 2 * x2 + rnorm(12)[match(g, lab("g", 12))] + rnorm(n)
run_case("rank_deficient_first", cbind(data.frame(y = round(y, 4)), d9, g = g), "y", names(d9), "g",
         "(1 | g)", "y ~ 1 + zero + s + x1 + x2 + (1 | g)",
         "zero is all 0, s = x1 + x2 comes before x1 and x2: lme4 drops zero and x2")

## ---- large_theta: group sd 100, residual sd 0.01 (theta about 1e4)
set.seed(10)
g <- rep(lab("g", 10), each = 6); n <- length(g)
x <- round(rnorm(n), 3)
y <- 50 + 2 * x + rnorm(10, sd = 100)[match(g, lab("g", 10))] + rnorm(n, sd = 0.01)
run_case("large_theta", data.frame(y = round(y, 6), x, g), "y", "x", "g", "(1 | g)", "y ~ 1 + x + (1 | g)",
         "theta about 1e4")

## ---- nested_singletons: (1 | a/b) where most a:b cells have a single row
set.seed(11)
a <- rep(LETTERS[1:6], each = 12)
b <- c(sapply(1:6, function(i) c(1, 1, 1, 2, 2, 3:9)))
n <- length(a)
ab <- paste(a, b, sep = ":")
x <- round(rnorm(n), 3)
y <- 1 + x + rnorm(6, sd = 1.5)[match(a, LETTERS[1:6])] + rnorm(length(unique(ab)), sd = 0.8)[match(ab, unique(ab))] + rnorm(n, sd = 0.6)
run_case("nested_singletons", data.frame(y = round(y, 4), x, a, b = as.character(b)), "y", "x", c("a", "b"),
         "(1 | a/b)", "y ~ 1 + x + (1 | a/b)", "9 b-cells per a, 7 of them with one row; lme4 names the inner factor b:a")

## ---- scales_fixed: fixed-effect covariates at 1e-6 and 1e6, random intercept only
set.seed(14)
g <- rep(lab("g", 20), each = 8); n <- length(g)
x_small <- signif(rnorm(n) * 1e-6, 6); x_big <- signif(rnorm(n) * 1e6, 6); x_mid <- round(rnorm(n), 3)
y <- 5 + 2e6 * x_small + 3e-6 * x_big - x_mid + rnorm(20)[match(g, lab("g", 20))] + rnorm(n)
run_case("scales_fixed", data.frame(y = signif(y, 8), x_small, x_big, x_mid, g), "y", c("x_small", "x_big", "x_mid"), "g",
         "(1 | g)", "y ~ 1 + x_small + x_big + x_mid + (1 | g)", "fixed-effect covariates at 1e-6, 1e6 and 1")

## ---- near_collinear: x2 = x1 + 1e-10 noise (aliased at lme4's 1e-7 tolerance), x3 = x1 + 1e-4 noise (kept)
set.seed(15)
g <- rep(lab("g", 15), each = 8); n <- length(g)
x1 <- round(rnorm(n), 3)
y <- 1 + x1 + rnorm(15)[match(g, lab("g", 15))] + rnorm(n)
run_case("near_collinear", data.frame(y = round(y, 4), x1, x2 = x1 + signif(rnorm(n) * 1e-10, 4), x3 = x1 + signif(rnorm(n) * 1e-4, 4), g),
         "y", c("x1", "x2", "x3"), "g", "(1 | g)", "y ~ 1 + x1 + x2 + x3 + (1 | g)",
         "x2 - x1 is 1e-10 (below lme4's rank tolerance 1e-7: dropped); x3 - x1 is 1e-4 (kept)")

## ---- extreme_weights: prior weights from 1e-4 to 1e4 (log-uniform)
set.seed(16)
g <- rep(lab("g", 20), each = 10); n <- length(g); gi <- match(g, lab("g", 20))
x <- round(rnorm(n), 3)
w <- signif(10^runif(n, -4, 4), 4)
y <- 2 + 0.5 * x + rnorm(20)[gi] + rnorm(20, sd = 0.5)[gi] * x + rnorm(n) / sqrt(w)
run_case("extreme_weights", data.frame(y = signif(y, 8), x, w, g), "y", "x", "g",
         "(1 + x | g)", "y ~ 1 + x + (1 + x | g)", "weights = w, log-uniform on [1e-4, 1e4]",
         weights = "w")

## ---- weights_tiny: sleepstudy with every prior weight 1e-8 (theta scales by 1e4, the optimum
## of the criterion is unchanged: the same fit as unweighted sleepstudy)
run_case("weights_tiny", data.frame(Reaction = ss$Reaction, Days = ss$Days, w = 1e-8, Subject = ss$Subject),
         "Reaction", "Days", "Subject", "(1 + Days | Subject)", "Reaction ~ 1 + Days + (1 + Days | Subject)",
         "weights = w = 1e-8 for every row: theta is 1e4 times sleepstudy's, the criterion's optimum the same",
         equivalent = list(df = ss, formula = "Reaction ~ 1 + Days + (1 + Days | Subject)"), weights = "w")

## ---- local optima: three small random-slope designs from sklmm's property-test generator
## (numpy, see README), where the criterion has more than one local minimum near the boundary.
## Their data are in local_optima_input.csv (columns case, y, x1, x2, g, h).
script_dir <- {
  file_arg <- grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE)
  if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "."
}
lo <- read.csv(file.path(script_dir, "local_optima_input.csv"), colClasses = c(g = "character", h = "character"))
lo_case <- function(name, formula, re, groups, reml_note) {
  d <- lo[lo$case == name, c("y", "x1", "x2", groups)]
  run_case(name, d, "y", c("x1", "x2"), groups, re, formula, reml_note)
}
lo_case("local_optimum_crossed", "y ~ 1 + x1 + x2 + (1 + x1 | g) + (1 | h)", "(1 + x1 | g) + (1 | h)", c("g", "h"),
        "generator seed 2024, design 212 (47 rows)")
lo_case("local_optimum_ml", "y ~ 1 + x1 + x2 + (1 + x1 | g) + (1 | h)", "(1 + x1 | g) + (1 | h)", c("g", "h"),
        "generator seed 2024, design 27 (57 rows)")
lo_case("local_optimum_slope", "y ~ 1 + x1 + x2 + (1 + x1 | g)", "(1 + x1 | g)", "g",
        "generator seed 2024, design 81 (60 rows)")
