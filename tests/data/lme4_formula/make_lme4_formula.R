# sklmm's extra lme4 formula cases (factor slopes, interactions of factors, transforms, nesting,
# contrasts, offsets, weights, logical columns), made as ../shared/reference-formula-glmm's corpus is
# (this is its script with other cases). lme4 1.1-31, lmerTest 3.1-3, pbkrtest 0.5.2. One folder per case: data.csv (raw columns; factors as strings, plus the
# numeric columns listed in spec$fixed for the X-form of the model), spec.json, reference.json.
# Every fit is made on the data as read back from data.csv, with C collation, so factor levels are
# sorted as Python sorts strings. Usage (from tests/data/lme4_formula): Rscript make_lme4_formula.R . [CASE...]
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


orth <- as.data.frame(Orthodont); orth$Subject <- as.character(orth$Subject); orth$Sex <- as.character(orth$Sex)
oats <- as.data.frame(Oats); oats$Block <- as.character(oats$Block); oats$Variety <- as.character(oats$Variety); oats$nitro_f <- paste0("n", oats$nitro)
sleepw <- sleep; sleepw$w <- rep(c(0.5, 1, 2), length.out = nrow(sleepw)); sleepw$late <- sleepw$Days > 4
L <- function(data, formula, groups, extra = list()) c(list(data = data, formula = formula, groups = groups), extra)
cases <- list(
  machines_slope      = L(mach, "score ~ Machine + (1 + Machine | Worker)", "Worker"),
  machines_zero       = L(mach, "score ~ Machine + (0 + Machine | Worker)", "Worker"),
  machines_doublebar  = L(mach, "score ~ Machine + (1 + Machine || Worker)", "Worker"),
  orthodont_interaction = L(orth, "distance ~ age * Sex + (age | Subject)", "Subject"),
  oats_splitplot      = L(oats, "yield ~ Variety * nitro_f + (1 | Block/Variety)", c("Block", "Variety")),
  oats_power          = L(oats, "yield ~ (Variety + nitro_f)^2 + (1 | Block)", "Block"),
  sleep_log           = L(sleep, "Reaction ~ log(Days + 1) + (log(Days + 1) | Subject)", "Subject"),
  sleep_scale         = L(sleep, "Reaction ~ scale(Days) + (1 | Subject)", "Subject"),
  sleep_offset        = L(sleep, "Reaction ~ Days + offset(2 * Days) + (1 | Subject)", "Subject"),
  sleep_weights_logical = L(sleepw, "Reaction ~ Days + late + (1 | Subject)", "Subject", list(weights = "w")),
  ergo_sum            = L(transform(ergo, Type = factor(Type)), "effort ~ C(Type, contr.sum) + (1 | Subject)", "Subject"),
  orthodont_nointercept = L(orth, "distance ~ 0 + Sex + age:Sex + (1 | Subject)", "Subject"),
  sleep_factor_poly   = L(transform(sleep, grp = Days %% 3), "log(Reaction) ~ factor(grp) + poly(Days, 2) + (1 | Subject)", "Subject")
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
