# lmerTest 3.1-3 / pbkrtest 0.5.2 tables for sklmm's tests of fixed effects.
#
# Usage (from tests/data/lmertest):  Rscript make_lmertest.R
#
# 1. The X-form reference cases (../lme4, ../lme4_extra): each fitted as
#    response ~ 1 + <fixed columns, numeric> + <random part>, so every column is its own
#    term (as sklmm treats an X-form fit). Written to xform/<case>.json.
# 2. Formula cases (cases/<name>/: data.csv + spec.json, made here from R data sets; the
#    gaussian cases of the shared formula reference are copied in as well): fitted with
#    their formula (terms, factors, interactions), and with their model-matrix columns x_*
#    as numerics (the X-form). Written to cases/<name>/lmertest.json.
# For each fit: REML and ML, Satterthwaite coefficient table and ANOVA types 1, 2, 3;
# Kenward-Roger (REML, unweighted, n <= 1000: pbkrtest forms n x n matrices) the same;
# and the printed coefficient table of summary() (REML) for both methods.
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(pbkrtest); library(jsonlite)})
invisible(Sys.setlocale("LC_COLLATE", "C"))
options(width = 80)

read_case <- function(dir) {
  spec <- fromJSON(file.path(dir, "spec.json"))
  d <- read.csv(file.path(dir, "data.csv"), colClasses = "character", check.names = FALSE)
  numeric_cols <- c(spec$response, unlist(spec$fixed), if (is.character(spec$weights)) spec$weights, spec$numeric)
  for (v in unique(numeric_cols)) d[[v]] <- as.numeric(d[[v]])
  for (v in spec$factors) d[[v]] <- factor(d[[v]])
  list(spec = spec, data = d)
}

coef_table <- function(fit, ddf) {
  s <- summary(fit, ddf = ddf)$coefficients
  list(names = I(rownames(s)), estimate = I(unname(s[, 1])), se = I(unname(s[, 2])), df = I(unname(s[, 3])),
       t = I(unname(s[, 4])), p = I(unname(s[, 5])))
}
anova_table <- function(fit, type, ddf) {
  a <- anova(fit, type = type, ddf = ddf)
  list(terms = I(rownames(a)), SumSq = I(a[["Sum Sq"]]), MeanSq = I(a[["Mean Sq"]]), NumDF = I(a$NumDF),
       DenDF = I(a$DenDF), F = I(a[["F value"]]), p = I(a[["Pr(>F)"]]))
}
tables <- function(fit, methods) {
  out <- list()
  for (m in methods) {
    out[[m]] <- list(coef = coef_table(fit, m),
                     anova = setNames(lapply(c(1, 2, 3), function(t) anova_table(fit, t, m)), c("1", "2", "3")))
  }
  out
}
printed <- function(fit, ddf) {
  txt <- capture.output(print(summary(fit, ddf = ddf)))
  start <- grep("^Fixed effects:", txt)
  end <- grep("^Signif. codes:|^Correlation of Fixed Effects:", txt)
  end <- if (length(end)) min(end[end > start]) else length(txt)
  paste(txt[start:end], collapse = "\n")
}
fit_both <- function(formula, data, weights, kr_ok) {
  w <- if (is.null(weights)) NULL else data[[weights]]
  reml <- eval(bquote(lmer(.(formula), data = data, REML = TRUE, weights = .(w))))
  ml <- eval(bquote(lmer(.(formula), data = data, REML = FALSE, weights = .(w))))
  res <- list(reml = tables(reml, c("Satterthwaite", if (kr_ok) "Kenward-Roger")),
              ml = tables(ml, "Satterthwaite"))
  res$summary_text <- list(Satterthwaite = printed(reml, "Satterthwaite"))
  if (kr_ok) res$summary_text[["Kenward-Roger"]] <- printed(reml, "Kenward-Roger")
  res$reml_theta <- getME(reml, "theta"); res$ml_theta <- getME(ml, "theta")
  res$vcov_kr <- if (kr_ok) unname(as.matrix(vcovAdj(reml))) else NULL
  res
}
xform_formula <- function(spec) {
  cols <- unlist(spec$fixed)
  fixed <- paste(c("1", if (length(cols)) paste0("`", cols, "`")), collapse = " + ")
  as.formula(paste(spec$response, "~", fixed, "+", spec$random_effects))
}

# -- 1. X-form cases ---------------------------------------------------------------------------
dir.create("xform", showWarnings = FALSE)
for (root in c("../lme4", "../lme4_extra")) {
  for (dir in list.dirs(root, recursive = FALSE)) {
    name <- basename(dir)
    cs <- read_case(dir)
    weights <- if (is.character(cs$spec$weights)) cs$spec$weights else NULL
    kr_ok <- is.null(weights) && nrow(cs$data) <= 1000
    res <- fit_both(xform_formula(cs$spec), cs$data, weights, kr_ok)
    writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, null = "null", pretty = TRUE), file.path("xform", paste0(name, ".json")))
    cat(name, "\n")
  }
}

# -- 2. formula cases -------------------------------------------------------------------------
make_case <- function(name, data, formula, response, factors, numeric, groups, random_effects) {
  dir <- file.path("cases", name)
  dir.create(dir, recursive = TRUE, showWarnings = FALSE)
  fixed_f <- nobars(as.formula(formula))
  mm <- model.matrix(fixed_f, data)[, -1, drop = FALSE]
  colnames(mm) <- paste0("x_", make.names(colnames(mm)))
  out <- cbind(data, as.data.frame(mm))
  write.csv(out, file.path(dir, "data.csv"), row.names = FALSE)
  spec <- list(formula = formula, response = response, factors = I(factors), numeric = I(numeric),
               groups = I(groups), random_effects = random_effects, fixed = I(colnames(mm)), weights = NULL)
  writeLines(toJSON(spec, auto_unbox = TRUE, pretty = TRUE, null = "null"), file.path(dir, "spec.json"))
}
data(ham, package = "lmerTest")
ham2 <- data.frame(liking = ham$Informed.liking, Product = paste0("P", ham$Product),
                   Information = paste0("I", ham$Information), Consumer = as.character(ham$Consumer))
make_case("ham", ham2, "liking ~ Product * Information + (1 | Consumer) + (1 | Consumer:Product)",
          "liking", c("Product", "Information"), character(0), c("Consumer", "Product"),
          "(1 | Consumer) + (1 | Consumer:Product)")
cake2 <- data.frame(angle = cake$angle, recipe = as.character(cake$recipe),
                    temperature = paste0("t", as.character(cake$temperature)), replicate = as.character(cake$replicate))
make_case("cake_factorial", cake2, "angle ~ recipe * temperature + (1 | recipe:replicate)",
          "angle", c("recipe", "temperature"), character(0), c("recipe", "replicate"), "(1 | recipe:replicate)")
sl <- sleepstudy; sl$Subject <- as.character(sl$Subject)
sl$Group <- c("A", "B", "C")[(as.integer(factor(sl$Subject)) %% 3) + 1]
make_case("sleep_groups", sl[, c("Reaction", "Days", "Subject", "Group")], "Reaction ~ Days * Group + (Days | Subject)",
          "Reaction", "Group", "Days", "Subject", "(Days | Subject)")
for (name in c("sleepstudy_quadratic", "machines_nested", "ergostool")) {
  src <- file.path("/work/shared/reference-formula-glmm", name)
  dir <- file.path("cases", name); dir.create(dir, recursive = TRUE, showWarnings = FALSE)
  file.copy(file.path(src, "data.csv"), file.path(dir, "data.csv"), overwrite = TRUE)
  spec <- fromJSON(file.path(src, "spec.json"))
  vars <- setdiff(all.vars(nobars(as.formula(spec$formula))), spec$response)
  d <- read.csv(file.path(dir, "data.csv"), colClasses = "character")
  spec$factors <- I(vars[!suppressWarnings(sapply(vars, function(v) all(!is.na(as.numeric(d[[v]])))))])
  spec$numeric <- I(setdiff(vars, spec$factors))
  writeLines(toJSON(spec, auto_unbox = TRUE, pretty = TRUE, null = "null"), file.path(dir, "spec.json"))
}
for (dir in list.dirs("cases", recursive = FALSE)) {
  name <- basename(dir)
  cs <- read_case(dir)
  kr_ok <- nrow(cs$data) <= 1000
  res <- list(formula = fit_both(as.formula(cs$spec$formula), cs$data, NULL, kr_ok),
              xform = fit_both(xform_formula(cs$spec), cs$data, NULL, kr_ok))
  fixed_f <- nobars(as.formula(cs$spec$formula))
  X <- model.matrix(fixed_f, cs$data)
  res$term_labels <- I(attr(terms(fixed_f), "term.labels"))
  res$assign <- I(attr(X, "assign"))
  res$coef_names <- I(colnames(X))
  writeLines(toJSON(res, digits = NA, auto_unbox = TRUE, null = "null", pretty = TRUE), file.path(dir, "lmertest.json"))
  cat(name, "\n")
}
cat(R.version.string, "lme4", format(packageVersion("lme4")), "lmerTest", format(packageVersion("lmerTest")),
    "pbkrtest", format(packageVersion("pbkrtest")), "\n", file = "VERSIONS")
