# Extra glmer reference cases for sklmm's GLMM tests, in the format of
# /work/shared/reference-formula-glmm (whose make script this extends: same loop, other cases).
# Usage: Rscript make_glmer_cases.R OUTDIR [CASE...]
# Builds the second reference corpus: lme4 formula fits (factors, interactions, transforms) with
# lmerTest's Satterthwaite and Kenward-Roger tests, and glmer fits (binomial, Poisson; Laplace and
# adaptive Gauss-Hermite). One folder per case: data.csv (raw columns; factors as strings, plus the
# numeric columns listed in spec$fixed for the X-form of the model), spec.json, reference.json.
# Every fit is made on the data as read back from data.csv, with C collation, so factor levels are
# sorted as Python sorts strings. Usage: Rscript make_reference_formula_glmm.R OUTDIR CASE...
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(jsonlite); library(mlmRev); library(nlme); library(MASS)})
invisible(Sys.setlocale("LC_COLLATE", "C"))
args <- commandArgs(trailingOnly = TRUE); outdir <- args[1]; wanted <- args[-1]
num <- function(x) as.numeric(as.character(x))
dm <- function(f, d) { m <- model.matrix(f, d)[, -1, drop = FALSE]; colnames(m) <- make.names(colnames(m)); as.data.frame(m) }

mach <- as.data.frame(Machines); mach$Worker <- as.character(mach$Worker); mach$Machine <- as.character(mach$Machine)
ergo <- as.data.frame(ergoStool); ergo$Subject <- as.character(ergoStool$Subject); ergo$Type <- as.character(ergo$Type)
sleep <- sleepstudy; sleep$Subject <- as.character(sleep$Subject)
cbpp2 <- cbpp; cbpp2$herd <- as.character(cbpp2$herd); cbpp2$period <- paste0("p", cbpp2$period); cbpp2$prop <- cbpp2$incidence / cbpp2$size
gt <- grouseticks; for (v in c("INDEX", "BROOD", "LOCATION")) gt[[v]] <- as.character(gt[[v]]); gt$YEAR <- paste0("y", gt$YEAR)
ep <- epil[, c("y", "lbase", "trt", "lage", "V4", "subject")]; ep$trt <- as.character(ep$trt); ep$subject <- as.character(ep$subject)

ct <- as.data.frame(Contraception); ct <- data.frame(woman = as.character(ct$woman), district = as.character(ct$district), use = as.character(ct$use), livch = as.character(ct$livch), age = ct$age, urban = as.character(ct$urban))
ct$y <- as.integer(ct$use == "Y")
gt$INDEX <- as.character(gt$INDEX)
ep2 <- epil[, c("y", "trt", "lage", "V4", "subject", "lbase")]; ep2$trt <- as.character(ep2$trt); ep2$subject <- as.character(ep2$subject)
va <- as.data.frame(VerbAgg); va <- data.frame(id = as.character(va$id), item = as.character(va$item), y = as.integer(va$r2 == "Y"), Anger = va$Anger, Gender = as.character(va$Gender), btype = as.character(va$btype), situ = as.character(va$situ))
L <- function(data, formula, groups, extra = list()) c(list(data = data, formula = formula, groups = groups), extra)
bin <- function(link, nAGQ = 1) list(family = "binomial", link = link, weights = "size", nAGQ = nAGQ)
cases <- list(
  cbpp_probit        = L(cbpp2, "prop ~ period + (1 | herd)", "herd", bin("probit")),
  cbpp_cloglog       = L(cbpp2, "prop ~ period + (1 | herd)", "herd", bin("cloglog")),
  cbpp_agq9          = L(cbpp2, "prop ~ period + (1 | herd)", "herd", bin("logit", 9)),
  contraception      = L(ct, "y ~ age + I(age^2) + urban + livch + (1 | district)", "district", list(family = "binomial", link = "logit")),
  contraception_slope = L(ct, "y ~ age + urban + livch + (1 + urban | district)", "district", list(family = "binomial", link = "logit")),
  contraception_agq5 = L(ct, "y ~ age + I(age^2) + urban + livch + (1 | district)", "district", list(family = "binomial", link = "logit", nAGQ = 5)),
  grouseticks_obs    = L(gt, "TICKS ~ YEAR + cHEIGHT + (1 | INDEX) + (1 | BROOD) + (1 | LOCATION)", c("INDEX", "BROOD", "LOCATION"), list(family = "poisson", link = "log")),
  epil_offset        = L(ep2, "y ~ trt + lage + V4 + offset(lbase) + (1 | subject)", "subject", list(family = "poisson", link = "log", offset = "lbase")),
  epil_agq7          = L(ep2, "y ~ trt + lage + V4 + lbase + (1 | subject)", "subject", list(family = "poisson", link = "log", nAGQ = 7)),
  epil_sqrt          = L(ep2, "y ~ trt + lage + V4 + lbase + (1 | subject)", "subject", list(family = "poisson", link = "sqrt")),
  verbagg            = L(va, "y ~ Anger + Gender + btype + situ + (1 | id) + (1 | item)", c("id", "item"), list(family = "binomial", link = "logit"))
)
if (length(wanted)) cases <- cases[wanted]

lst <- function(v) if (is.null(v)) NULL else as.list(v)
ci_list <- function(ci) list(names = I(rownames(ci)), lower = I(unname(ci[, 1])), upper = I(unname(ci[, 2])))
for (name in names(cases)) {
  cs <- cases[[name]]
  dir.create(file.path(outdir, name), recursive = TRUE, showWarnings = FALSE)
  f <- as.formula(cs$formula)
  fixed_f <- nobars(f); fixed_rhs <- delete.response(terms(fixed_f))
  raw <- cs$data
  raw <- raw[, intersect(names(raw), unique(c(all.vars(f), cs$weights, cs$offset))), drop = FALSE]
  X <- dm(fixed_rhs, raw)  # the X-form: numeric columns as model.matrix makes them (no intercept)
  X <- X[, !startsWith(names(X), "offset."), drop = FALSE]
  xform <- cbind(raw, setNames(X, paste0("x_", names(X))))
  write.csv(xform, file.path(outdir, name, "data.csv"), row.names = FALSE)
  d <- read.csv(file.path(outdir, name, "data.csv"), stringsAsFactors = TRUE)
  for (g in cs$groups) d[[g]] <- factor(as.character(d[[g]]))
  glmm <- !is.null(cs$family)
  out <- list()
  for (reml in if (glmm) NA else c(TRUE, FALSE)) {
    t0 <- proc.time()[["elapsed"]]
    w <- if (is.null(cs$weights)) NULL else d[[cs$weights]]
    fm <- if (glmm) {
      fam <- get(cs$family)(link = cs$link)
      eval(bquote(glmer(f, data = d, family = fam, weights = .(w), nAGQ = .(if (is.null(cs$nAGQ)) 1 else cs$nAGQ))))
    } else eval(bquote(lmer(f, data = d, REML = reml, weights = .(w))))
    secs <- proc.time()[["elapsed"]] - t0
    vc <- as.data.frame(VarCorr(fm))
    re <- lapply(ranef(fm), function(r) list(levels = I(rownames(r)), columns = I(colnames(r)), values = lapply(seq_len(nrow(r)), function(i) I(unname(as.numeric(r[i, ]))))))
    key <- if (glmm) "fit" else if (reml) "reml" else "ml"
    res <- list(
      objective = if (glmm) -2 * as.numeric(logLik(fm)) else unname(if (reml) REMLcrit(fm) else deviance(fm)),
      loglik = as.numeric(logLik(fm)), aic = AIC(fm), bic = BIC(fm),
      theta = unname(getME(fm, "theta")), sigma = sigma(fm),
      coef = as.list(fixef(fm)), coef_se = as.list(sqrt(diag(as.matrix(vcov(fm))))),
      vcov = unname(as.matrix(vcov(fm))), varcorr = vc, ranef = re,
      fitted_head = unname(head(fitted(fm), 20)),
      predict_population_head = unname(head(predict(fm, re.form = NA, type = "response"), 20)),
      confint_wald = local({ ci <- confint(fm, method = "Wald"); ci_list(ci[!is.na(ci[, 1]), , drop = FALSE]) }),
      singular = isSingular(fm), lme4_seconds = secs, optimizer = I(fm@optinfo$optimizer), feval = fm@optinfo$feval)
    if (glmm) {
      res$z_table <- local({ s <- coef(summary(fm)); list(names = I(rownames(s)), z = I(unname(s[, 3])), p = I(unname(s[, 4]))) })
    } else if (reml) {
      for (ddf in c("Satterthwaite", "Kenward-Roger")) {
        s <- coef(summary(fm, ddf = ddf)); a <- anova(fm, type = 3, ddf = ddf)
        res[[paste0("tests_", ddf)]] <- list(
          coef = list(names = I(rownames(s)), se = I(unname(s[, "Std. Error"])), df = I(unname(s[, "df"])), t = I(unname(s[, "t value"])), p = I(unname(s[, "Pr(>|t|)"]))),
          anova_type3 = list(terms = I(rownames(a)), F = I(unname(a[["F value"]])), NumDF = I(unname(a[["NumDF"]])), DenDF = I(unname(a[["DenDF"]])), p = I(unname(a[["Pr(>F)"]]))))
      }
    }
    out[[key]] <- res
  }
  spec <- list(formula = cs$formula, response = all.vars(f)[1], fixed = I(paste0("x_", names(X))), groups = I(cs$groups),
               random_effects = paste(sapply(findbars(f), function(b) paste0("(", deparse(b), ")")), collapse = " + "),
               family = if (glmm) cs$family else "gaussian", link = if (glmm) cs$link else "identity",
               nAGQ = if (is.null(cs$nAGQ)) 1 else cs$nAGQ, weights = cs$weights, offset = cs$offset, n = nrow(d))
  write(toJSON(spec, auto_unbox = TRUE, pretty = TRUE, null = "null"), file.path(outdir, name, "spec.json"))
  write(toJSON(out, auto_unbox = TRUE, digits = NA, pretty = TRUE, na = "null"), file.path(outdir, name, "reference.json"))
  cat(name, nrow(d), "rows;", if (glmm) paste(cs$family, cs$link) else "lmer", round(secs, 2), "s\n")
}
