#!/usr/bin/env Rscript
## Regenerates the extra lme4 reference fits in this folder (one sub-folder per case,
## each with data.csv, spec.json and reference.json, in the layout of the shared
## reference corpus described in API.md, "Reference corpus format").
##
## Usage:  Rscript make_reference.R [output_dir]
##         (output_dir defaults to the folder holding this script)
##
## Every fit is made on the data as read back from the data.csv just written, so the
## numbers lme4 saw are exactly the ones in the CSV. Factor levels are sorted in the C
## locale (radix sort), so the ranef level order does not depend on the machine's locale.
## Simulated cases use the Mersenne-Twister RNG with R >= 3.6 sampling ("Rejection");
## each case sets its own seed (listed in README.md).

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

## ---------------------------------------------------------------- helpers

write_json_file <- function(x, path) {
  txt <- toJSON(x, auto_unbox = TRUE, digits = NA, pretty = TRUE)
  writeLines(txt, path)
}

## Write data.csv, then read it back with the grouping columns as factors whose
## levels are sorted in the C locale.
write_and_reload <- function(df, dir, group_cols) {
  path <- file.path(dir, "data.csv")
  for (g in group_cols) df[[g]] <- as.character(df[[g]])
  write.csv(df, path, row.names = FALSE)
  cc <- setNames(rep("character", length(group_cols)), group_cols)
  d <- read.csv(path, colClasses = cc)
  for (g in group_cols) d[[g]] <- factor(d[[g]], levels = sort(unique(d[[g]]), method = "radix"))
  d
}

fit_lmer <- function(formula_str, data, REML, weights_col = NULL) {
  warns <- character(0)
  msgs <- character(0)
  form <- as.formula(formula_str, env = environment())
  cl <- if (is.null(weights_col)) {
    bquote(lmer(.(form), data = data, REML = .(REML)))
  } else {
    bquote(lmer(.(form), data = data, REML = .(REML), weights = .(as.name(weights_col))))
  }
  fit <- NULL
  secs <- system.time(
    fit <- withCallingHandlers(
      eval(cl),
      warning = function(w) {
        warns <<- c(warns, conditionMessage(w))
        invokeRestart("muffleWarning")
      },
      message = function(m) {
        msgs <<- c(msgs, sub("\n$", "", conditionMessage(m)))
        invokeRestart("muffleMessage")
      }
    )
  )[["elapsed"]]
  list(fit = fit, secs = secs, warnings = warns, messages = msgs)
}

extract <- function(res) {
  fit <- res$fit
  vc <- as.data.frame(VarCorr(fit))
  vc_rows <- lapply(seq_len(nrow(vc)), function(i) {
    r <- list(grp = as.character(vc$grp[i]))
    if (!is.na(vc$var1[i])) r$var1 <- as.character(vc$var1[i])
    if (!is.na(vc$var2[i])) r$var2 <- as.character(vc$var2[i])
    r$vcov <- vc$vcov[i]
    r$sdcor <- vc$sdcor[i]
    r
  })
  re <- ranef(fit, condVar = FALSE)
  re_list <- lapply(re, function(df) {
    list(levels = I(rownames(df)), columns = I(colnames(df)),
         values = unname(as.matrix(df)))
  })
  beta <- fixef(fit)
  V <- as.matrix(vcov(fit))
  ci <- confint(fit, parm = "beta_", method = "Wald")
  objective <- if (isREML(fit)) fit@devcomp$cmp[["REML"]] else fit@devcomp$cmp[["dev"]]
  list(
    objective = unname(objective),
    loglik = as.numeric(logLik(fit)),
    aic = AIC(fit),
    bic = BIC(fit),
    theta = unname(getME(fit, "theta")),
    sigma = sigma(fit),
    coef = as.list(beta),
    coef_se = as.list(setNames(sqrt(diag(V)), names(beta))),
    varcorr = vc_rows,
    ranef = re_list,
    fitted_head = I(unname(head(fitted(fit), 20))),
    vcov = unname(V),
    confint_wald = list(names = I(rownames(ci)), lower = I(unname(ci[, 1])),
                        upper = I(unname(ci[, 2]))),
    singular = isSingular(fit),
    lme4_seconds = res$secs,
    optimizer = fit@optinfo$optimizer,
    feval = fit@optinfo$feval,
    warnings = I(res$warnings),
    messages = I(res$messages)
  )
}

run_case <- function(name, df, response, fixed, groups, random_effects,
                     lme4_formula, weights = NULL, notes = NULL) {
  dir <- file.path(out_root, name)
  dir.create(dir, showWarnings = FALSE, recursive = TRUE)
  d <- write_and_reload(df, dir, groups)
  spec <- list(
    response = response,
    fixed = I(fixed),
    groups = I(groups),
    random_effects = random_effects,
    lme4_formula = lme4_formula,
    weights = if (is.null(weights)) setNames(list(), character(0)) else weights,
    n = nrow(d)
  )
  if (!is.null(notes)) spec$notes <- notes
  write_json_file(spec, file.path(dir, "spec.json"))
  ref <- list(
    reml = extract(fit_lmer(lme4_formula, d, TRUE, weights)),
    ml = extract(fit_lmer(lme4_formula, d, FALSE, weights))
  )
  write_json_file(ref, file.path(dir, "reference.json"))
  for (m in c("reml", "ml")) {
    r <- ref[[m]]
    cat(sprintf("%-22s %-4s obj=%.6f feval=%d singular=%s warnings=%d messages=%s\n",
                name, m, r$objective, r$feval, r$singular, length(r$warnings),
                paste(c(r$warnings, r$messages), collapse = " | ")))
  }
  invisible(ref)
}

lab <- function(prefix, n) sprintf("%s%02d", prefix, seq_len(n))

## ---------------------------------------------------------------- a. sleepstudy, implied intercept
ss <- lme4::sleepstudy[, c("Reaction", "Days", "Subject")]
run_case("sleepstudy_implied_intercept", ss, "Reaction", "Days", "Subject",
         "(Days | Subject)",
         "Reaction ~ 1 + Days + (Days | Subject)")

## ---------------------------------------------------------------- b. sleepstudy, slope only
run_case("sleepstudy_slope_only", ss, "Reaction", "Days", "Subject",
         "(0 + Days | Subject)",
         "Reaction ~ 1 + Days + (0 + Days | Subject)")

## ---------------------------------------------------------------- c. nested, random slope on the outer factor
set.seed(20241003)
a_lev <- LETTERS[1:8]
d_c <- expand.grid(rep = 1:6, b = as.character(1:4), a = a_lev, stringsAsFactors = FALSE)
d_c <- d_c[, c("a", "b")]
n_c <- nrow(d_c)
x_c <- round(rnorm(n_c), 3)
sd_a <- c(2.0, 0.8); rho_a <- 0.3
S_a <- diag(sd_a) %*% matrix(c(1, rho_a, rho_a, 1), 2) %*% diag(sd_a)
u_a <- matrix(rnorm(8 * 2), 8) %*% chol(S_a)
rownames(u_a) <- a_lev
ab <- paste(d_c$a, d_c$b, sep = ":")
u_ab <- setNames(rnorm(32, sd = 1.2), unique(ab))
y_c <- 5 + 1.5 * x_c + u_a[d_c$a, 1] + u_a[d_c$a, 2] * x_c + u_ab[ab] + rnorm(n_c, sd = 1)
df_c <- data.frame(y = round(unname(y_c), 4), x = x_c, a = d_c$a, b = d_c$b)
run_case("nested_slope", df_c, "y", "x", c("a", "b"),
         "(1 + x | a) + (1 | a:b)",
         "y ~ 1 + x + (1 + x | a) + (1 | a:b)",
         notes = paste("b is nested in a with labels reused across a. lme4 was given a:b directly",
                       "(it builds the interaction factor itself), so the group is named 'a:b' and",
                       "its levels '<a>:<b>' (e.g. 'A:1'), as sklmm names them."))

## ---------------------------------------------------------------- d. three crossed factors, unbalanced
set.seed(20241004)
d_d <- expand.grid(rep = 1:2, f2 = lab("q", 15), f1 = lab("p", 40), stringsAsFactors = FALSE)
d_d$f3 <- sample(sprintf("r%d", 1:5), nrow(d_d), replace = TRUE)
d_d <- d_d[runif(nrow(d_d)) > 0.2, c("f1", "f2", "f3")]
n_d <- nrow(d_d)
x1_d <- round(rnorm(n_d), 3)
x2_d <- round(runif(n_d, 0, 10), 3)
u1 <- setNames(rnorm(40, sd = 1.0), lab("p", 40))
u2 <- setNames(rnorm(15, sd = 0.7), lab("q", 15))
u3 <- setNames(rnorm(5, sd = 1.5), sprintf("r%d", 1:5))
y_d <- 10 + 0.5 * x1_d - 0.3 * x2_d + u1[d_d$f1] + u2[d_d$f2] + u3[d_d$f3] + rnorm(n_d, sd = 1)
df_d <- data.frame(y = round(unname(y_d), 4), x1 = x1_d, x2 = x2_d,
                   f1 = d_d$f1, f2 = d_d$f2, f3 = d_d$f3)
run_case("crossed3", df_d, "y", c("x1", "x2"), c("f1", "f2", "f3"),
         "(1 | f1) + (1 | f2) + (1 | f3)",
         "y ~ 1 + x1 + x2 + (1 | f1) + (1 | f2) + (1 | f3)")

## ---------------------------------------------------------------- e. three correlated terms
set.seed(20241005)
g_e <- lab("g", 30)
n_g <- sample(8:32, 30, replace = TRUE)
grp_e <- rep(g_e, n_g)
n_e <- length(grp_e)
x1_e <- round(rnorm(n_e), 3)
x2_e <- round(rnorm(n_e), 3)
sd_e <- c(2.0, 1.0, 0.5)
R_e <- matrix(c(1, 0.4, -0.3,
                0.4, 1, 0.2,
                -0.3, 0.2, 1), 3)
S_e <- diag(sd_e) %*% R_e %*% diag(sd_e)
u_e <- matrix(rnorm(30 * 3), 30) %*% chol(S_e)
rownames(u_e) <- g_e
y_e <- 2 + 1.0 * x1_e - 0.5 * x2_e + u_e[grp_e, 1] + u_e[grp_e, 2] * x1_e +
  u_e[grp_e, 3] * x2_e + rnorm(n_e, sd = 1)
df_e <- data.frame(y = round(unname(y_e), 4), x1 = x1_e, x2 = x2_e, g = grp_e)
run_case("slopes3_corr", df_e, "y", c("x1", "x2"), "g",
         "(1 + x1 + x2 | g)",
         "y ~ 1 + x1 + x2 + (1 + x1 + x2 | g)")

## ---------------------------------------------------------------- f. prior weights
set.seed(20241006)
g_f <- lab("g", 25)
n_gf <- sample(6:18, 25, replace = TRUE)
grp_f <- rep(g_f, n_gf)
n_f <- length(grp_f)
x_f <- round(rnorm(n_f), 3)
w_f <- round(runif(n_f, 0.5, 3), 3)
sd_f <- c(1.5, 0.6); rho_f <- -0.4
S_f <- diag(sd_f) %*% matrix(c(1, rho_f, rho_f, 1), 2) %*% diag(sd_f)
u_f <- matrix(rnorm(25 * 2), 25) %*% chol(S_f)
rownames(u_f) <- g_f
y_f <- 3 + 2 * x_f + u_f[grp_f, 1] + u_f[grp_f, 2] * x_f + rnorm(n_f, sd = 1.2) / sqrt(w_f)
df_f <- data.frame(y = round(unname(y_f), 4), x = x_f, g = grp_f, w = w_f)
run_case("weighted_slope", df_f, "y", "x", "g",
         "(1 + x | g)",
         "y ~ 1 + x + (1 + x | g)",
         weights = "w")

## ---------------------------------------------------------------- g. zerocorr on one factor, crossed with another
set.seed(20241007)
d_g <- expand.grid(rep = 1:2, h = lab("h", 12), g = lab("g", 20), stringsAsFactors = FALSE)
d_g <- d_g[runif(nrow(d_g)) > 0.2, c("g", "h")]
n_gg <- nrow(d_g)
x_g <- round(rnorm(n_gg), 3)
ug0 <- setNames(rnorm(20, sd = 1.5), lab("g", 20))
ug1 <- setNames(rnorm(20, sd = 0.8), lab("g", 20))
uh <- setNames(rnorm(12, sd = 1.0), lab("h", 12))
y_g <- 1 + 0.7 * x_g + ug0[d_g$g] + ug1[d_g$g] * x_g + uh[d_g$h] + rnorm(n_gg, sd = 1)
df_g <- data.frame(y = round(unname(y_g), 4), x = x_g, g = d_g$g, h = d_g$h)
run_case("zerocorr_crossed", df_g, "y", "x", c("g", "h"),
         "(1 + x || g) + (1 | h)",
         "y ~ 1 + x + (1 + x || g) + (1 | h)",
         notes = paste("lme4 splits (1 + x || g) into (1 | g) + (0 + x | g): varcorr names the",
                       "second term's group 'g.1' (sklmm keeps 'g'); ranef merges both terms",
                       "under 'g' with columns (Intercept) and x."))

## ---------------------------------------------------------------- h. cake (nested, lme4 built-in)
ck <- lme4::cake[, c("angle", "temp", "recipe", "replicate")]
run_case("cake", ck, "angle", "temp", c("recipe", "replicate"),
         "(1 | recipe/replicate)",
         "angle ~ 1 + temp + (1 | recipe/replicate)",
         notes = paste("lme4 expands (1 | recipe/replicate) to (1 | replicate:recipe) + (1 | recipe)",
                       "and names the nested factor 'replicate:recipe', with levels '<replicate>:<recipe>'",
                       "(e.g. '1:A'); this reference keeps lme4's names in varcorr and ranef. sklmm calls",
                       "the same factor 'recipe:replicate' with levels '<recipe>:<replicate>' (e.g. 'A:1').",
                       "replicate levels are sorted as strings (C locale): '1', '10', ..., '15', '2', ...;",
                       "temp is numeric (the ordered factor temperature is not used)."))

cat("R:", R.version.string, " lme4:", as.character(packageVersion("lme4")),
    " Matrix:", as.character(packageVersion("Matrix")),
    " jsonlite:", as.character(packageVersion("jsonlite")), "\n")
