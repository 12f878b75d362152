# lmerTest 3.1-3 ANOVA tables (types 1-3, Satterthwaite, REML) for formulas whose terms lack
# their marginal terms or the intercept, where R codes some factors by dummies (its terms'
# "factors" entries 2): ham data of cases/ham. Usage: Rscript make_nonhierarchical.R
suppressPackageStartupMessages({library(lmerTest); library(jsonlite)})
invisible(Sys.setlocale("LC_COLLATE", "C"))
d <- read.csv("cases/ham/data.csv")
formulas <- c("liking ~ 0 + Product * Information + (1 | Consumer)",
              "liking ~ Product + Product:Information + (1 | Consumer)",
              "liking ~ Information + Product:Information + (1 | Consumer) + (1 | Consumer:Product)")
out <- lapply(formulas, function(f) {
  fm <- lmer(as.formula(f), d)
  list(formula = f, anova = setNames(lapply(1:3, function(t) {
    a <- anova(fm, type = t)
    list(terms = I(rownames(a)), SumSq = I(a[["Sum Sq"]]), NumDF = I(a$NumDF), DenDF = I(a$DenDF), F = I(a[["F value"]]), p = I(a[["Pr(>F)"]]))
  }), c("1", "2", "3")))
})
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, pretty = TRUE), "nonhierarchical.json")
