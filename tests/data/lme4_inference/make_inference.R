#!/usr/bin/env Rscript
## lme4 reference values for sklmm's inference features (summary, vcov, confint,
## condVar, predict with new levels, anova, bootstrap confint).
##
## Usage (from the repository root):
##   Rscript tests/data/lme4_inference/make_inference.R [output_dir]
## output_dir defaults to the folder holding this script. The case data are read from
## ../lme4/<case>/ and ../lme4_extra/<case>/ relative to this script (data.csv, spec.json).
##
## Writes <output_dir>/<case>.json for every case, plus anova.json and bootstrap.json.
## See README.md in this folder for the JSON layout.

suppressPackageStartupMessages({
  library(lme4)
  library(jsonlite)
})
RNGkind("Mersenne-Twister", "Inversion", "Rejection")
invisible(Sys.setlocale("LC_COLLATE", "C"))
options(width = 80)  # summary_text is captured at this width

file_arg <- grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE)
script_dir <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else "."
args <- commandArgs(trailingOnly = TRUE)
out_root <- if (length(args) >= 1) args[1] else script_dir
dir.create(out_root, showWarnings = FALSE, recursive = TRUE)
data_root <- normalizePath(file.path(script_dir, ".."))

PROFILE_MAX_N <- 1000      # confint(method = "profile") only for n <= this
PROFILE_TIME_LIMIT <- 60   # seconds; profile is abandoned (recorded as skipped) after this
CONDVAR_MAX_LEVELS <- Inf  # all levels are stored (the output stays well under 2 MB)
NEW_LEVEL <- "NEW_LEVEL"

versions <- list(
  R = R.version.string,
  lme4 = as.character(packageVersion("lme4")),
  Matrix = as.character(packageVersion("Matrix")),
  jsonlite = as.character(packageVersion("jsonlite"))
)

## ---------------------------------------------------------------- helpers

write_json_file <- function(x, path) {
  txt <- toJSON(x, auto_unbox = TRUE, digits = NA, na = "null", null = "null", pretty = TRUE)
  writeLines(txt, path)
}

## Evaluate expr, collecting warnings and messages (muffled) and the elapsed time.
capture_all <- function(expr) {
  warns <- character(0)
  msgs <- character(0)
  t0 <- proc.time()[["elapsed"]]
  value <- withCallingHandlers(
    expr,
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    },
    message = function(m) {
      msgs <<- c(msgs, gsub("^\n+|\n+$", "", conditionMessage(m)))
      invokeRestart("muffleMessage")
    }
  )
  list(value = value, warnings = I(warns), messages = I(msgs),
       seconds = proc.time()[["elapsed"]] - t0)
}

named_matrix <- function(m) {
  m <- as.matrix(m)
  list(rownames = I(rownames(m)), colnames = I(colnames(m)), values = unname(m))
}

named_list <- function(v) as.list(v)  # named vector -> JSON object

ci_to_list <- function(ci, level) {
  list(level = level, names = I(rownames(ci)), colnames = I(colnames(ci)),
       lower = I(unname(ci[, 1])), upper = I(unname(ci[, 2])))
}

read_case <- function(dir) {
  spec <- fromJSON(file.path(dir, "spec.json"), simplifyVector = TRUE)
  groups <- spec$groups
  cc <- setNames(rep("character", length(groups)), groups)
  d <- read.csv(file.path(dir, "data.csv"), colClasses = cc)
  list(spec = spec, raw = d)
}

## Grouping columns -> factors with C-locale sorted levels (as in the corpus fits);
## pastes also needs the explicit nested factor batch_cask that its lme4_formula uses.
prepare_data <- function(d, spec, newdata = FALSE) {
  for (g in spec$groups) {
    d[[g]] <- if (newdata) as.character(d[[g]]) else factor(d[[g]], levels = sort(unique(d[[g]]), method = "radix"))
  }
  if (grepl("batch_cask", spec$lme4_formula, fixed = TRUE)) {
    bc <- paste(as.character(d$batch), as.character(d$cask), sep = ":")
    d$batch_cask <- if (newdata) bc else factor(bc, levels = sort(unique(bc), method = "radix"))
  }
  d
}

fit_lmer <- function(formula_str, data, REML, weights_col = NULL) {
  form <- as.formula(formula_str, env = environment())
  cl <- if (is.null(weights_col)) {
    bquote(lmer(.(form), data = data, REML = .(REML)))
  } else {
    bquote(lmer(.(form), data = data, REML = .(REML), weights = .(as.name(weights_col))))
  }
  capture_all(eval(cl))
}

condvar_list <- function(fit) {
  re <- capture_all(ranef(fit, condVar = TRUE))
  out <- lapply(names(re$value), function(g) {
    df <- re$value[[g]]
    pv <- attr(df, "postVar")
    lev <- rownames(df)
    keep <- seq_len(min(length(lev), CONDVAR_MAX_LEVELS))
    arr_to_list <- function(a) {
      lapply(keep, function(k) matrix(a[, , k], nrow = dim(a)[1], ncol = dim(a)[2]))
    }
    res <- list(
      n_levels = length(lev),
      levels = I(lev[keep]),
      truncated = length(keep) < length(lev),
      columns = I(colnames(df)),
      modes = unname(as.matrix(df))[keep, , drop = FALSE],
      postVar_is_list = is.list(pv)
    )
    if (is.list(pv)) {
      ## one array per random-effects term of this factor (e.g. `||` terms)
      res$terms <- lapply(names(pv), function(tn) {
        a <- pv[[tn]]
        list(term_columns = I(if (!is.null(dimnames(a)[[1]])) dimnames(a)[[1]] else tn),
             list_name = tn, dim = I(dim(a)), condvar = arr_to_list(a))
      })
    } else {
      res$dim <- I(dim(pv))
      res$condvar <- arr_to_list(pv)
    }
    res
  })
  names(out) <- names(re$value)
  list(factors = out, warnings = re$warnings, messages = re$messages)
}

make_newdata_sets <- function(raw, spec) {
  n <- nrow(raw)
  rows <- unique(round(seq(1, n, length.out = 5)))
  base <- raw[rows, , drop = FALSE]
  rownames(base) <- NULL
  for (g in spec$groups) base[[g]] <- as.character(base[[g]])
  sets <- list(spread5 = list(rows = I(rows), data = base))
  all_new <- base
  for (g in spec$groups) all_new[[g]] <- NEW_LEVEL
  sets$spread5_all_new <- list(rows = I(rows), data = all_new)
  if (length(spec$groups) > 1) {
    for (g in spec$groups) {
      one <- base
      one[[g]] <- NEW_LEVEL
      sets[[paste0("spread5_new_", g)]] <- list(rows = I(rows), data = one)
    }
  }
  sets
}

predict_sets <- function(fit, sets, spec) {
  lapply(sets, function(s) {
    nd <- prepare_data(s$data, spec, newdata = TRUE)
    p1 <- capture_all(predict(fit, newdata = nd, allow.new.levels = TRUE))
    p2 <- capture_all(predict(fit, newdata = nd, re.form = NA))
    list(allow_new_levels = I(unname(p1$value)), re_form_NA = I(unname(p2$value)),
         warnings = I(c(p1$warnings, p2$warnings)), messages = I(c(p1$messages, p2$messages)))
  })
}

profile_ci <- function(fit, n, weighted = FALSE) {
  if (n > PROFILE_MAX_N) {
    return(list(skipped = sprintf("n = %d > %d: profile not computed (large case)", n, PROFILE_MAX_N)))
  }
  res <- tryCatch({
    setTimeLimit(elapsed = PROFILE_TIME_LIMIT, transient = TRUE)
    on.exit(setTimeLimit(elapsed = Inf))
    capture_all(confint(fit, method = "profile", oldNames = FALSE, level = 0.95))
  }, error = function(e) e)
  setTimeLimit(elapsed = Inf)
  if (inherits(res, "error")) {
    return(list(skipped = paste("error:", conditionMessage(res))))
  }
  ## profiling repeats some warnings many times: keep each distinct text once, in order of
  ## first appearance, with its count
  w <- as.character(res$warnings)
  uw <- unique(w)
  out <- c(ci_to_list(res$value, 0.95),
           list(warnings = I(uw), warning_counts = I(as.integer(table(factor(w, levels = uw)))),
                messages = res$messages, seconds = res$seconds))
  if (weighted) {
    out$note <- paste("lme4 known bug (github.com/lme4/lme4/issues/192, open): profiling ignores the",
                      "prior weights in its deviance, so these intervals (fixed effects especially)",
                      "are wrong; compare them with Wald. Kept only as what lme4 1.1-31 returns.")
  }
  out
}

safe <- function(expr) tryCatch(expr, error = function(e) NULL)

extract_method <- function(res, n, sets, spec) {
  fit <- res$value
  reml <- isREML(fit)
  sm <- summary(fit)
  summary_text <- paste(capture.output(print(sm)), collapse = "\n")
  resid <- residuals(fit, type = "pearson", scaled = TRUE)
  rq <- setNames(quantile(resid, na.rm = TRUE, names = FALSE), c("Min", "1Q", "Median", "3Q", "Max"))
  coefs <- sm$coefficients
  V <- as.matrix(vcov(fit))
  ll <- logLik(fit)
  dev <- capture_all(deviance(fit))
  aictab <- sm$AICtab
  wald95 <- confint(fit, method = "Wald", oldNames = FALSE, level = 0.95)
  wald90 <- confint(fit, method = "Wald", oldNames = FALSE, level = 0.90)
  out <- list(
    REML = reml,
    fit_warnings = res$warnings,
    fit_messages = res$messages,
    ## 6. cross-check values
    sigma = sigma(fit),
    theta = I(unname(getME(fit, "theta"))),
    theta_names = I(names(getME(fit, "theta"))),
    fixef = named_list(fixef(fit)),
    nobs = nobs(fit),
    ## 1. summary
    summary_text = summary_text,
    summary = list(
      methTitle = methTitle(fit@devcomp$dims),
      scaled_residual_quantiles = named_list(rq),
      ngrps = named_list(ngrps(fit)),
      nobs = nobs(fit),
      fixef_table = list(rownames = I(rownames(coefs)), colnames = I(colnames(coefs)),
                         values = unname(coefs)),
      fixef_correlation = named_matrix(cov2cor(V)),
      AICtab = named_list(aictab),
      fitMsgs = I(unlist(sm$fitMsgs)),  # fixed-effect model-matrix messages (rank deficiency)
      optimizer = fit@optinfo$optimizer,
      optimizer_convergence_code = fit@optinfo$conv$opt,
      lme4_conv_messages = I(as.character(unlist(fit@optinfo$conv$lme4$messages))),
      optimizer_warnings = I(as.character(unlist(fit@optinfo$warnings)))
    ),
    ## 2. information criteria
    vcov = named_matrix(V),
    AIC = AIC(fit),
    BIC = BIC(fit),
    logLik = as.numeric(ll),
    df = attr(ll, "df"),
    deviance = dev$value,
    deviance_warnings = dev$warnings,
    REMLcrit = safe(REMLcrit(fit)),
    deviance_REML_FALSE = safe(deviance(fit, REML = FALSE)),
    logLik_REML_FALSE = as.numeric(logLik(fit, REML = FALSE)),
    ## 3. Wald
    confint_wald = list(`0.95` = ci_to_list(wald95, 0.95), `0.9` = ci_to_list(wald90, 0.90)),
    ## 4. profile
    confint_profile = profile_ci(fit, n, weighted = !is.null(spec$weights) && is.character(spec$weights)),
    ## 5. conditional variances
    condvar = condvar_list(fit),
    ## 7. predictions
    predict_newdata = predict_sets(fit, sets, spec)
  )
  out
}

## ---------------------------------------------------------------- per-case files

case_dirs <- c(
  list.dirs(file.path(data_root, "lme4"), recursive = FALSE),
  list.dirs(file.path(data_root, "lme4_extra"), recursive = FALSE)
)
case_dirs <- case_dirs[file.exists(file.path(case_dirs, "spec.json"))]

max_rel <- function(a, b) max(abs(unlist(a) - unlist(b)) / pmax(1e-8, abs(unlist(b))))

for (dir in case_dirs) {
  name <- basename(dir)
  src <- basename(dirname(dir))
  cs <- read_case(dir)
  spec <- cs$spec
  d <- prepare_data(cs$raw, spec)
  wcol <- if (is.character(spec$weights) && length(spec$weights) == 1) spec$weights else NULL
  sets <- make_newdata_sets(cs$raw, spec)
  out <- list(
    case = name,
    source = paste0("tests/data/", src, "/", name),
    lme4_formula = spec$lme4_formula,
    weights = if (is.null(wcol)) NULL else wcol,
    n = nrow(d),
    versions = versions,
    newdata = sets
  )
  ref <- fromJSON(file.path(dir, "reference.json"), simplifyVector = TRUE)
  for (m in c("reml", "ml")) {
    res <- fit_lmer(spec$lme4_formula, d, m == "reml", wcol)
    out[[m]] <- extract_method(res, nrow(d), sets, spec)
    r <- out[[m]]
    prof <- r$confint_profile
    cat(sprintf("%-28s %-4s dtheta=%.1e dsigma=%.1e dbeta=%.1e profile=%s %s\n", name, m,
                max_rel(r$theta, ref[[m]]$theta), max_rel(r$sigma, ref[[m]]$sigma),
                max_rel(r$fixef, ref[[m]]$coef[names(r$fixef)]),
                if (!is.null(prof$skipped)) "skipped" else sprintf("%.1fs", prof$seconds),
                paste(c(r$fit_messages, r$fit_warnings, prof$warnings), collapse = " | ")))
    if (!is.null(ref[[m]]$confint_profile) && is.null(prof$skipped)) {
      cat(sprintf("%-28s %-4s profile vs reference.json: max rel diff lower %.1e upper %.1e\n",
                  name, m, max_rel(prof$lower, ref[[m]]$confint_profile$lower),
                  max_rel(prof$upper, ref[[m]]$confint_profile$upper)))
    }
  }
  write_json_file(out, file.path(out_root, paste0(name, ".json")))
}

## ---------------------------------------------------------------- anova.json

load_global <- function(case) {
  cs <- read_case(file.path(data_root, "lme4", case))
  prepare_data(cs$raw, cs$spec)
}
sleepstudy <- load_global("sleepstudy")
penicillin <- load_global("penicillin")

model_info <- function(m) {
  ll <- logLik(m)
  mm <- if (isREML(m)) refitML(m) else m
  llm <- logLik(mm)
  list(
    formula = deparse1(formula(m)),
    REML = isREML(m),
    npar = attr(ll, "df"),
    AIC = AIC(m), BIC = BIC(m), logLik = as.numeric(ll),
    REMLcrit = if (isREML(m)) REMLcrit(m) else NULL,
    theta = I(unname(getME(m, "theta"))), sigma = sigma(m),
    ml_refit = list(AIC = AIC(mm), BIC = BIC(mm), logLik = as.numeric(llm),
                    deviance = deviance(mm), theta = I(unname(getME(mm, "theta"))),
                    sigma = sigma(mm), fixef = named_list(fixef(mm)))
  )
}

anova_entry <- function(description, call_text, models, env) {
  res <- capture_all(eval(parse(text = call_text)[[1]], envir = env))
  tab <- res$value
  list(
    description = description,
    call = call_text,
    models = lapply(models, function(nm) c(list(name = nm, lmer_call = deparse1(getCall(get(nm, envir = env)))),
                                           model_info(get(nm, envir = env)))),
    messages = res$messages,
    warnings = res$warnings,
    heading = I(attr(tab, "heading")),
    printed = paste(capture.output(print(tab)), collapse = "\n"),
    table = list(
      rownames = I(rownames(tab)),
      npar = I(tab$npar), AIC = I(tab$AIC), BIC = I(tab$BIC), logLik = I(tab$logLik),
      deviance = I(tab$deviance), Chisq = I(tab$Chisq), Df = I(tab$Df),
      `Pr(>Chisq)` = I(tab$`Pr(>Chisq)`)
    )
  )
}

anova_out <- list(versions = versions, comparisons = list())
local({
  e <- environment()
  m0 <- lmer(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  m1 <- lmer(Reaction ~ Days + (1 + Days | Subject), data = sleepstudy)
  anova_out$comparisons$a_sleepstudy_slope_reml <<- anova_entry(
    "sleepstudy random intercept vs correlated random slope, REML fits (anova refits with ML)",
    "anova(m0, m1)", c("m0", "m1"), e)
  anova_out$comparisons$a_sleepstudy_slope_reml_norefit <<- anova_entry(
    "as (a) with refit = FALSE: the REML criteria are compared as they are",
    "anova(m0, m1, refit = FALSE)", c("m0", "m1"), e)
})
local({
  e <- environment()
  m0 <- lmer(Reaction ~ Days + (1 | Subject), data = sleepstudy, REML = FALSE)
  m1 <- lmer(Reaction ~ Days + (1 + Days | Subject), data = sleepstudy, REML = FALSE)
  anova_out$comparisons$b_sleepstudy_slope_ml <<- anova_entry(
    "sleepstudy random intercept vs correlated random slope, ML fits",
    "anova(m0, m1)", c("m0", "m1"), e)
})
local({
  e <- environment()
  m0 <- lmer(Reaction ~ 1 + (1 + Days | Subject), data = sleepstudy, REML = FALSE)
  m1 <- lmer(Reaction ~ Days + (1 + Days | Subject), data = sleepstudy, REML = FALSE)
  anova_out$comparisons$c_sleepstudy_fixed_days_ml <<- anova_entry(
    "sleepstudy fixed-effect test for Days, ML fits",
    "anova(m0, m1)", c("m0", "m1"), e)
})
local({
  e <- environment()
  m0 <- lmer(Reaction ~ Days + (1 + Days || Subject), data = sleepstudy)
  m1 <- lmer(Reaction ~ Days + (1 + Days | Subject), data = sleepstudy)
  anova_out$comparisons$d_sleepstudy_zerocorr_reml <<- anova_entry(
    "sleepstudy uncorrelated (||) vs correlated random slope, REML fits (anova refits with ML)",
    "anova(m0, m1)", c("m0", "m1"), e)
  anova_out$comparisons$d_sleepstudy_zerocorr_reml_norefit <<- anova_entry(
    "as (d) with refit = FALSE",
    "anova(m0, m1, refit = FALSE)", c("m0", "m1"), e)
})
local({
  e <- environment()
  m0 <- lmer(diameter ~ 1 + (1 | plate), data = penicillin)
  m1 <- lmer(diameter ~ 1 + (1 | plate) + (1 | sample), data = penicillin)
  anova_out$comparisons$e_penicillin_sample_reml <<- anova_entry(
    "penicillin: adding the crossed (1 | sample) term, REML fits (anova refits with ML)",
    "anova(m0, m1)", c("m0", "m1"), e)
})
local({
  e <- environment()
  m0 <- lmer(Reaction ~ Days + (1 | Subject), data = sleepstudy)
  m1 <- lmer(Reaction ~ Days + (1 + Days || Subject), data = sleepstudy)
  m2 <- lmer(Reaction ~ Days + (1 + Days | Subject), data = sleepstudy)
  anova_out$comparisons$f_sleepstudy_three_models_reml <<- anova_entry(
    "sleepstudy three models (1|Subject), (1+Days||Subject), (1+Days|Subject), REML fits",
    "anova(m0, m1, m2)", c("m0", "m1", "m2"), e)
})
write_json_file(anova_out, file.path(out_root, "anova.json"))
for (nm in names(anova_out$comparisons)) {
  cat("anova", nm, ":", paste(anova_out$comparisons[[nm]]$messages, collapse = " | "), "\n")
}

## ---------------------------------------------------------------- bootstrap.json

local({
  fit <- lmer(Reaction ~ 1 + Days + (1 + Days | Subject), data = sleepstudy, REML = TRUE)
  bt <- capture_all(confint(fit, method = "boot", nsim = 500, seed = 1, oldNames = FALSE))
  out <- c(
    list(versions = versions,
         case = "sleepstudy",
         lmer_call = deparse1(getCall(fit)),
         call = "confint(fit, method = \"boot\", nsim = 500, seed = 1, oldNames = FALSE)",
         boot_type = "perc", nsim = 500, seed = 1),
    ci_to_list(bt$value, 0.95),
    list(warnings = bt$warnings, messages = bt$messages, seconds = bt$seconds)
  )
  write_json_file(out, file.path(out_root, "bootstrap.json"))
  cat(sprintf("bootstrap: %.1fs %s\n", bt$seconds, paste(c(bt$messages, bt$warnings), collapse = " | ")))
})

cat("R:", versions$R, " lme4:", versions$lme4, " Matrix:", versions$Matrix,
    " jsonlite:", versions$jsonlite, "\n")
