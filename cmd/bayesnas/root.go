package main

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/spf13/cast"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"bayesnas/internal/textpos"
	"bayesnas/models"
	"bayesnas/nn"
	"bayesnas/pipeline"
)

// version is set by -ldflags "-X main.version=..." in releases.
var version = "0.1.0-dev"

func versionString() string {
	v := version
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += " (" + s.Value[:12] + ")"
			}
		}
	}
	return v
}

func newRoot(blasNote string) *cobra.Command {
	root := &cobra.Command{
		Use:   "bayesnas",
		Short: "Bayesian one-shot architecture search, compression and ONNX export for edge devices",
		Long: `bayesnas turns a dataset and a target device into a small, fast, deployable network.

Each stage is a subcommand that reads the previous stage's artifacts from a run
directory. Settings come from a YAML file (--config), overridden by BAYESNAS_*
environment variables (BAYESNAS_TRAIN_EPOCHS=3 sets train.epochs), overridden by
flags. The fully resolved configuration is written into the run directory.

Start with:  bayesnas train --config configs/demo.yaml`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().String("log-format", "text", "log format: text or json")
	root.PersistentFlags().Float64("memory-limit-gb", 0, "most memory a network may take when compiled (GiB); 0: 90 % of this machine's")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		gb, err := cmd.Flags().GetFloat64("memory-limit-gb")
		if err != nil || gb < 0 || math.IsNaN(gb) || math.IsInf(gb, 0) {
			return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--memory-limit-gb %v: want a size in GiB >= 0", gb))
		}
		if gb > 0 {
			models.SetMemoryLimit(int64(gb * (1 << 30)))
		}
		if f := cmd.Flags().Lookup("log-format"); f != nil && f.Value.String() != "text" && f.Value.String() != "json" {
			return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("--log-format %q: want text or json", f.Value.String()))
		}
		// A misspelt BAYESNAS_* variable fails every command, not only those
		// that read the configuration (BAYESNAS_CACHE is read by validate).
		if err := checkEnvironment(os.Environ()); err != nil {
			return err
		}
		// Every thread or worker count is bounded, whichever command takes it.
		return checkThreadFlags(cmd)
	}
	// A bad flag is a usage error (exit 2), not a failed run.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return pipeline.Mark(pipeline.ErrUsage, err) })
	root.AddCommand(newTrainCmd(blasNote), newSearchCmd(blasNote), newDeriveCmd(), newDescribeCmd(), newExportCmd(), newValidateCmd(), newImportCmd(), newProfileCmd(), newCompressCmd(), newPipelineCmd(blasNote), &cobra.Command{
		Use:   "version",
		Short: "Print the version",
		Args:  cobra.NoArgs,
		Run: func(cmd *cobra.Command, _ []string) {
			fmt.Fprintln(cmd.OutOrStdout(), "bayesnas", versionString())
		},
	})
	markUsage(root)
	return root
}

// markUsage makes every argument error a usage error (exit 2): a wrong
// number of arguments, an unknown subcommand (cobra's own errors carry no
// kind), and a command that only groups subcommands given none or an
// unknown one (cobra would print the help and exit 0).
func markUsage(cmd *cobra.Command) {
	if cmd.HasSubCommands() && !cmd.Runnable() {
		cmd.Args = cobra.ArbitraryArgs
		cmd.RunE = func(c *cobra.Command, args []string) error {
			var names []string
			for _, sub := range c.Commands() {
				if sub.IsAvailableCommand() {
					names = append(names, sub.Name())
				}
			}
			if len(args) == 0 && !c.HasParent() {
				return c.Help()
			}
			if len(args) == 0 {
				return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("%s: give a subcommand: %s", c.CommandPath(), strings.Join(names, ", ")))
			}
			hint := ""
			if s := c.SuggestionsFor(args[0]); len(s) > 0 {
				hint = fmt.Sprintf(" (did you mean %s?)", strings.Join(s, ", "))
			}
			return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("unknown command %q for %q%s; known: %s", args[0], c.CommandPath(), hint, strings.Join(names, ", ")))
		}
	} else if args := cmd.Args; args != nil {
		cmd.Args = func(c *cobra.Command, a []string) error { return pipeline.Mark(pipeline.ErrUsage, args(c, a)) }
	}
	for _, sub := range cmd.Commands() {
		markUsage(sub)
	}
}

func newLogger(cmd *cobra.Command) (*slog.Logger, error) {
	f, _ := cmd.Flags().GetString("log-format")
	w := cmd.ErrOrStderr()
	switch f {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", f)
}

// flagKeys maps a flag to the configuration key it overrides.
type flagKey struct{ flag, key string }

// loadConfig resolves defaults < YAML file < BAYESNAS_* environment < flags.
func loadConfig(cmd *cobra.Command, binds []flagKey) (pipeline.Config, error) {
	var cfg pipeline.Config
	v, err := newViper(cmd, pipeline.Defaults(), binds)
	if err != nil {
		return cfg, err
	}
	if err := v.Unmarshal(&cfg); err != nil {
		return cfg, pipeline.Mark(pipeline.ErrUsage, decodeError(err))
	}
	if unknown := unknownKeys(v); len(unknown) > 0 {
		return cfg, pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("config: unknown keys %s (see configs/demo.yaml for the known ones)", strings.Join(unknown, ", ")))
	}
	return cfg, pipeline.Mark(pipeline.ErrUsage, cfg.Validate())
}

// decodeError is a configuration decoding error on one line: mapstructure
// lists its errors under a heading, one per line.
func decodeError(err error) error {
	msg := strings.TrimSpace(strings.Replace(err.Error(), "decoding failed due to the following error(s):", "", 1))
	var parts []string
	for _, l := range strings.Split(msg, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			parts = append(parts, l)
		}
	}
	return fmt.Errorf("config: %s", strings.Join(parts, "; "))
}

// newViper layers defaults < the --config YAML file < BAYESNAS_* environment
// variables < the flags in binds.
func newViper(cmd *cobra.Command, defaults map[string]any, binds []flagKey) (*viper.Viper, error) {
	if err := checkEnvironment(os.Environ()); err != nil {
		return nil, err
	}
	v := viper.New()
	for k, val := range defaults {
		v.SetDefault(k, val)
	}
	v.SetEnvPrefix("BAYESNAS")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_"))
	v.AutomaticEnv()
	if path, _ := cmd.Flags().GetString("config"); path != "" {
		if err := readConfigFile(v, path); err != nil {
			return nil, pipeline.Mark(pipeline.ErrUsage, err)
		}
	}
	for _, b := range binds {
		if f := cmd.Flags().Lookup(b.flag); f != nil {
			if err := v.BindPFlag(b.key, f); err != nil {
				return nil, err
			}
		}
	}
	if err := checkThreadKeys(v); err != nil {
		return nil, err
	}
	return v, nil
}

// readConfigFile reads the --config file at path into v. The file is YAML
// whatever its name ends with (viper would pick a decoder by the extension
// and refuse any other with `Unsupported Config Type ""`); errors name the
// file and, for a YAML error, FILE:LINE as the YAML decoder reports it.
func readConfigFile(v *viper.Viper, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	if fi.IsDir() {
		return fmt.Errorf("reading config %s: is a directory, not a YAML file", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading config: %w", err)
	}
	if err := textpos.CheckYAML(b); err != nil {
		return fmt.Errorf("reading config %w", textpos.At(path, err))
	}
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(b)); err != nil {
		return fmt.Errorf("reading config %s: %w", path, err)
	}
	return nil
}

// isThreadSetting says whether a flag or configuration key sets a thread or
// worker count ("threads", "device.threads", "--threads", ...).
func isThreadSetting(name string) bool {
	last := name[strings.LastIndexAny(name, ".-")+1:]
	return last == "threads" || last == "workers"
}

// checkThreadFlags bounds every thread or worker flag of cmd (nn.MaxWorkers).
func checkThreadFlags(cmd *cobra.Command) error {
	var err error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		if err != nil || !isThreadSetting(f.Name) {
			return
		}
		n, perr := strconv.Atoi(f.Value.String())
		if perr != nil {
			return // not a count: the command reads it as something else
		}
		if cerr := nn.CheckWorkers("--"+f.Name, n); cerr != nil {
			err = pipeline.Mark(pipeline.ErrUsage, cerr)
		}
	})
	return err
}

// checkThreadKeys bounds every thread or worker count of a resolved
// configuration, whether from the file, a BAYESNAS_* variable or a flag.
func checkThreadKeys(v *viper.Viper) error {
	for _, k := range v.AllKeys() {
		if !isThreadSetting(k) {
			continue
		}
		n, err := cast.ToIntE(v.Get(k))
		if err != nil {
			return pipeline.Mark(pipeline.ErrUsage, fmt.Errorf("config: %s = %v: %w", k, v.Get(k), err))
		}
		if err := nn.CheckWorkers("config: "+k, n); err != nil {
			return pipeline.Mark(pipeline.ErrUsage, err)
		}
	}
	return nil
}

// unknownKeys lists keys set in the file that no field reads: a typo in a
// config must not be silently ignored.
func unknownKeys(v *viper.Viper) []string {
	known := pipeline.Defaults()
	var bad []string
	for _, k := range v.AllKeys() {
		if _, ok := known[k]; ok || strings.HasPrefix(k, "model.params.") {
			continue
		}
		bad = append(bad, k)
	}
	return bad
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
