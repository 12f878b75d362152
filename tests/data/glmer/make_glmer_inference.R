# lme4 1.1-31 results for the GLMM inference tests: likelihood-ratio anova of two cbpp
# glmer fits and condVar of the conditional modes. Usage: Rscript make_glmer_inference.R
suppressPackageStartupMessages({library(lme4); library(jsonlite)})
d <- read.csv("cbpp/data.csv"); d$herd <- factor(d$herd)
m1 <- glmer(prop ~ x_periodp2 + x_periodp3 + x_periodp4 + (1 | herd), data = d, family = binomial, weights = size)
m0 <- glmer(prop ~ 1 + (1 | herd), data = d, family = binomial, weights = size)
a <- anova(m0, m1)
cv <- attr(ranef(m1, condVar = TRUE)$herd, "postVar")
out <- list(anova = list(npar = a$npar, logLik = a$logLik, Chisq = a$Chisq, Df = a$Df, p = a[["Pr(>Chisq)"]]),
            condvar = list(levels = rownames(ranef(m1)$herd), values = as.numeric(cv)))
write(toJSON(out, digits = NA, na = "null", auto_unbox = TRUE, pretty = TRUE), "cbpp_inference.json")
