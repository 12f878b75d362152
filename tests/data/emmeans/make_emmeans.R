# emmeans 1.8.4-1 references for sklmm.emmeans, on the formula cases of ../lmertest/cases.
# Usage (from tests/data/emmeans): Rscript make_emmeans.R   -> emmeans.json
# For each case and specs (with or without `by`): the marginal means (emmean, SE, df, lower.CL,
# upper.CL) with emmeans' default df for lmer (Kenward-Roger, n <= 3000) and with
# lmer.df = "satterthwaite"; pairwise comparisons with adjust = tukey, bonferroni, holm, none;
# the linear functions (linfct) of the means.
suppressPackageStartupMessages({library(lme4); library(lmerTest); library(emmeans); library(jsonlite)})
invisible(Sys.setlocale("LC_COLLATE", "C"))
read_case <- function(dir) {
  spec <- fromJSON(file.path(dir, "spec.json"))
  d <- read.csv(file.path(dir, "data.csv"), colClasses = "character", check.names = FALSE)
  for (v in c(spec$response, unlist(spec$numeric))) d[[v]] <- as.numeric(d[[v]])
  for (v in unlist(spec$factors)) d[[v]] <- factor(d[[v]])
  list(spec = spec, data = d)
}
runs <- list(
  list(case = "ham", specs = "Product", by = NULL),
  list(case = "ham", specs = "Product", by = "Information"),
  list(case = "ham", specs = "Information", by = NULL),
  list(case = "cake_factorial", specs = "recipe", by = NULL),
  list(case = "cake_factorial", specs = "temperature", by = "recipe"),
  list(case = "sleep_groups", specs = "Group", by = NULL),
  list(case = "ergostool", specs = "Type", by = NULL),
  list(case = "machines_nested", specs = "Machine", by = NULL)
)
tab <- function(s) lapply(as.data.frame(s), function(col) if (is.factor(col)) as.character(col) else col)
out <- list()
for (r in runs) {
  cs <- read_case(file.path("../lmertest/cases", r$case))
  fit <- lme4::lmer(as.formula(cs$spec$formula), data = cs$data, REML = TRUE)
  res <- list(case = r$case, specs = r$specs, by = r$by)
  for (mode in c("kenward-roger", "satterthwaite")) {
    emm <- emmeans(fit, specs = r$specs, by = r$by, lmer.df = mode)
    entry <- list(means = tab(summary(emm, level = 0.9)), linfct = unname(emm@linfct))
    for (adj in c("tukey", "bonferroni", "holm", "none")) entry[[paste0("pairs_", adj)]] <- tab(summary(pairs(emm, adjust = adj)))
    res[[mode]] <- entry
  }
  res$default_mode <- attr(emmeans(fit, specs = r$specs)@dffun, "mesg")
  out[[length(out) + 1]] <- res
  cat(r$case, r$specs, "\n")
}
writeLines(toJSON(out, digits = NA, auto_unbox = TRUE, null = "null", pretty = TRUE), "emmeans.json")
cat(R.version.string, "emmeans", format(packageVersion("emmeans")), "pbkrtest", format(packageVersion("pbkrtest")), "\n", file = "VERSIONS")
