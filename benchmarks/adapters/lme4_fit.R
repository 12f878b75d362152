# Fit one benchmark problem with lme4 and print one JSON line.
#
# Rscript lme4_fit.R FOLDER N FORMULA REML REPEAT BUDGET WEIGHTS COLUMN=TYPE ...
#
# Fits up to REPEAT times, fewer once the fits have taken BUDGET seconds.
#
# Columns are raw little-endian files written by benchmarks/problems.py:
# NAME.f64 (double) and NAME.i32 (0-based level codes, read as a factor).
# Only lmer() is timed (proc.time() around it): not R's start-up, not
# loading lme4, not reading the data.  A first lmer() on sleepstudy warms
# up lme4's code paths before the timed fits.
args <- commandArgs(trailingOnly = TRUE)
folder <- args[1]
n <- as.integer(args[2])
formula <- as.formula(args[3])
reml <- as.logical(args[4])
repeats <- as.integer(args[5])
budget <- as.numeric(args[6])
weights_column <- args[7]
columns <- args[-(1:7)]

suppressMessages(library(lme4))
data <- list()
for (spec in columns) {
  parts <- strsplit(spec, "=", fixed = TRUE)[[1]]
  path <- file.path(folder, paste0(parts[1], ".", parts[2]))
  if (parts[2] == "f64") {
    data[[parts[1]]] <- readBin(path, "double", n = n, size = 8, endian = "little")
  } else {
    data[[parts[1]]] <- factor(readBin(path, "integer", n = n, size = 4, endian = "little"))
  }
}
data <- as.data.frame(data, check.names = FALSE)

invisible(lmer(Reaction ~ Days + (Days | Subject), sleepstudy))

json_string <- function(x) {
  x <- gsub("\\\\", "\\\\\\\\", x)
  x <- gsub("\"", "\\\\\"", x)
  paste0("\"", gsub("[\r\n\t]", " ", x), "\"")
}

result <- tryCatch({
  seconds <- numeric(0)
  while (length(seconds) < max(1, repeats) && (length(seconds) == 0 || sum(seconds) < budget)) {
    if (nzchar(weights_column)) {
      data$.weights <- data[[weights_column]]
      start <- proc.time()[["elapsed"]]
      fit <- lmer(formula, data = data, REML = reml, weights = .weights)
    } else {
      start <- proc.time()[["elapsed"]]
      fit <- lmer(formula, data = data, REML = reml)
    }
    seconds <- c(seconds, proc.time()[["elapsed"]] - start)
  }
  objective <- if (reml) REMLcrit(fit) else deviance(fit)
  messages <- c(fit@optinfo$conv$lme4$messages, fit@optinfo$warnings)
  sprintf(
    "{\"seconds\": [%s], \"objective\": %.10f, \"feval\": %d, \"theta\": [%s], \"messages\": %s}",
    paste(sprintf("%.6f", seconds), collapse = ", "), objective, as.integer(fit@optinfo$feval),
    paste(sprintf("%.10g", getME(fit, "theta")), collapse = ", "),
    json_string(paste(unlist(messages), collapse = "; "))
  )
}, error = function(e) sprintf("{\"error\": %s}", json_string(conditionMessage(e))))
cat(result, "\n", sep = "")
