package bench

import (
	"fmt"
	"io"
	"sort"
	"text/tabwriter"
)

// PeerRow is one test's ratio over several alternating runs of both
// engines (A B A B …): the per-pair ratios and their median, which is what
// a shared, noisy machine can support.
type PeerRow struct {
	Name   string    `json:"name"`
	Ratios []float64 `json:"ratios"` // ours / llama.cpp, one per pair, in run order
	Median float64   `json:"median_ratio"`
	// Medians of each engine's own tok/s across pairs, for scale.
	OursMedian   float64 `json:"ours_median_tokens_per_s"`
	TheirsMedian float64 `json:"llamacpp_median_tokens_per_s"`
}

// PeerSummary is the result of a peer run.
type PeerSummary struct {
	Pairs        int       `json:"pairs"`
	Rows         []PeerRow `json:"rows"`
	OursGBs      float64   `json:"ours_decode_gbs_median"`
	TheirGBs     float64   `json:"llamacpp_decode_gbs_median"`
	MemGBsMedian float64   `json:"mem_bandwidth_gbs_median,omitempty"`
}

// Summarize takes the comparisons of alternating pairs and reports each
// test's median ratio. Tests missing from some pair use the pairs that have
// them.
func Summarize(pairs []Comparison) PeerSummary {
	s := PeerSummary{Pairs: len(pairs)}
	byName := map[string]*PeerRow{}
	var order []string
	ours, theirs := map[string][]float64{}, map[string][]float64{}
	var og, tg, mg []float64
	for _, c := range pairs {
		for _, r := range c.Rows {
			row, ok := byName[r.Name]
			if !ok {
				row = &PeerRow{Name: r.Name}
				byName[r.Name] = row
				order = append(order, r.Name)
			}
			row.Ratios = append(row.Ratios, r.Ratio)
			ours[r.Name] = append(ours[r.Name], r.Ours)
			theirs[r.Name] = append(theirs[r.Name], r.Theirs)
		}
		if c.OursGBs > 0 {
			og = append(og, c.OursGBs)
		}
		if c.TheirGBs > 0 {
			tg = append(tg, c.TheirGBs)
		}
		if c.MemGBs > 0 {
			mg = append(mg, c.MemGBs)
		}
	}
	for _, n := range order {
		r := byName[n]
		r.Median = Median(r.Ratios)
		r.OursMedian, r.TheirsMedian = Median(ours[n]), Median(theirs[n])
		s.Rows = append(s.Rows, *r)
	}
	s.OursGBs, s.TheirGBs, s.MemGBsMedian = Median(og), Median(tg), Median(mg)
	return s
}

// Median of xs (the mean of the middle two for an even count); 0 for none.
func Median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	v := append([]float64(nil), xs...)
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// WriteTable prints the summary as a table.
func (s PeerSummary) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "test\tours tok/s\tllama.cpp tok/s\tmedian ratio\tper-pair ratios (%d pairs)\n", s.Pairs)
	for _, r := range s.Rows {
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f×\t", r.Name, r.OursMedian, r.TheirsMedian, r.Median)
		for i, x := range r.Ratios {
			if i > 0 {
				fmt.Fprint(tw, " ")
			}
			fmt.Fprintf(tw, "%.2f", x)
		}
		fmt.Fprintln(tw)
	}
	if s.OursGBs > 0 {
		fmt.Fprintf(tw, "decode weight streaming\t%.2f GB/s\t%.2f GB/s\t\t", s.OursGBs, s.TheirGBs)
		if s.MemGBsMedian > 0 {
			fmt.Fprintf(tw, "triad %.2f GB/s (ours %.0f%%)", s.MemGBsMedian, 100*s.OursGBs/s.MemGBsMedian)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}
