# lme4 1.1-31 references for cbind(successes, failures) responses in glmer and for
# confint(glmer, method = "profile") (issue 12).  Usage: Rscript make_glmer_cbind.R
# Writes cbpp.csv, trials.csv and reference.json in this folder.
suppressPackageStartupMessages({library(lme4); library(jsonlite)})

fit_summary <- function(m) {
  list(objective = -2 * as.numeric(logLik(m)), nobs = nobs(m), aic = AIC(m), bic = BIC(m),
       theta = unname(getME(m, "theta")), coef = unname(fixef(m)), coef_names = names(fixef(m)),
       coef_se = unname(sqrt(diag(as.matrix(vcov(m))))),
       sd = as.data.frame(VarCorr(m))$sdcor,
       ranef = lapply(ranef(m), function(r) list(levels = rownames(r), values = as.numeric(as.matrix(r)))),
       fitted = unname(fitted(m)))
}

# 1. cbpp: cbind(incidence, size - incidence) ~ period + (1 | herd)
d <- cbpp
write.csv(d, "cbpp.csv", row.names = FALSE)
m_cbpp <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = d, family = binomial)
s_cbpp <- fit_summary(m_cbpp)  # now: profiling changes the model object's PIRLS state (ranef, fitted)

# 2. simulated binomial counts with prior weights (replicate counts) and rows of zero trials;
#    a random intercept and slope.
set.seed(12)
g <- factor(rep(sprintf("g%02d", 1:30), each = 8))
x <- round(rnorm(240), 3)
trials <- sample(0:12, 240, replace = TRUE)
u0 <- rnorm(30, sd = 0.7)[g]; u1 <- rnorm(30, sd = 0.4)[g]
p <- plogis(-0.3 + 0.8 * x + u0 + u1 * x)
succ <- rbinom(240, trials, p)
w <- sample(1:3, 240, replace = TRUE)
t <- data.frame(succ = succ, trials = trials, x = x, g = g, w = w)
write.csv(t, "trials.csv", row.names = FALSE)
m_trials <- glmer(cbind(succ, trials - succ) ~ x + (1 + x | g), data = t, family = binomial, weights = w)
m_trials_now <- glmer(cbind(succ, trials - succ) ~ x + (1 | g), data = t, family = binomial)

# 3. profile intervals: cbpp (Laplace and nAGQ = 9) and a Poisson model (epil, tests/data/glmer/epil)
ci_cbpp <- confint(m_cbpp, method = "profile", oldNames = FALSE)
e <- read.csv("../glmer/epil/data.csv"); e$subject <- factor(e$subject)
m_epil <- glmer(y ~ lbase * trt + lage + V4 + (1 | subject), data = e, family = poisson)
s_epil <- fit_summary(m_epil)
ci_epil <- confint(m_epil, method = "profile", oldNames = FALSE)
m_agq <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = d, family = binomial, nAGQ = 9)
s_agq <- fit_summary(m_agq)
ci_agq <- confint(m_agq, method = "profile", oldNames = FALSE)
ci_frame <- function(ci) list(names = rownames(ci), lower = unname(ci[, 1]), upper = unname(ci[, 2]))

# 4. non-integer counts: lme4 warns ("non-integer counts in a binomial glm!") and fits
d5 <- d; d5$incidence[1] <- 2.5
m_frac <- suppressWarnings(glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = d5, family = binomial))

# 5. a row of zero trials: weight 0, kept (nobs 57, Pearson residual 0 in the summary's quantiles)
d0 <- rbind(d, data.frame(herd = "1", incidence = 0, size = 0, period = "1"))
m_zero <- glmer(cbind(incidence, size - incidence) ~ period + (1 | herd), data = d0, family = binomial)
s_zero <- c(fit_summary(m_zero), list(scaled_residuals = unname(quantile(residuals(m_zero, "pearson", scaled = TRUE)))))

out <- list(lme4 = as.character(packageVersion("lme4")),
            cbpp = s_cbpp, trials = fit_summary(m_trials), trials_intercept = fit_summary(m_trials_now),
            profile_cbpp = ci_frame(ci_cbpp), epil = s_epil, profile_epil = ci_frame(ci_epil),
            noninteger = fit_summary(m_frac), cbpp_agq9 = s_agq, profile_cbpp_agq9 = ci_frame(ci_agq),
            zero_total = s_zero)
write(toJSON(out, digits = NA, na = "null", auto_unbox = TRUE, pretty = TRUE), "reference.json")
